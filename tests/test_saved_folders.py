"""Every folder a `train all` run writes loads with `AutoModel.from_pretrained` as the class that saved it, with no
missing, unexpected or mismatched key, with the package and from the folder's own code without it."""

import json
import textwrap

import pytest
from test_remote_code import BLOCK_MAGTKD_HF, run_offline_script
from test_training import tiny_release, trained  # noqa: F401 (module fixtures: one tiny `train all` run)
from transformers import AutoModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FOLDERS = {
    "text": "MagtkdTextModel",
    "audio": "MagtkdAudioModel",
    "video": "MagtkdVideoModel",
    "distill-audio": "MagtkdAudioModel",
    "distill-video": "MagtkdVideoModel",
    "fusion": "MagtkdFusionModel",
    "model": "MagtkdForEmotionRecognition",
}
LOAD_EVERY_FOLDER = BLOCK_MAGTKD_HF + textwrap.dedent(
    """
    import json
    from transformers import AutoModel

    run, names = sys.argv[1], json.loads(sys.argv[2])
    result = {}
    for folder in names:
        model, info = AutoModel.from_pretrained(f"{run}/{folder}", trust_remote_code=True, output_loading_info=True)
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        result[folder] = [type(model).__name__, {kind: sorted(map(str, keys)) for kind, keys in info.items()
                                                 if kind != "error_msgs" and keys}]
    print(json.dumps(result))
    """
)


def _saved_class(folder) -> str:
    return json.loads((folder / "config.json").read_text())["architectures"][0]


def test_every_folder_loads_as_the_class_that_saved_it(trained):  # noqa: F811
    for folder, class_name in FOLDERS.items():
        assert _saved_class(trained / folder) == class_name
        model, info = AutoModel.from_pretrained(str(trained / folder), output_loading_info=True)
        assert type(model).__name__ == class_name, folder
        assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), (folder, info)


def test_every_folder_loads_from_its_own_code_without_the_package(trained, tmp_path):  # noqa: F811
    result = run_offline_script(LOAD_EVERY_FOLDER, [trained, json.dumps(list(FOLDERS))], tmp_path)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert {folder: name for folder, (name, _) in loaded.items()} == FOLDERS
    assert {folder: problems for folder, (_, problems) in loaded.items() if problems} == {}
