"""A saved folder loads with `trust_remote_code=True` where `magtkd_hf` cannot be imported at all: every model class."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_fusion_model import make_batch, tiny_config
from tiny_magtkd import tiny_config as tiny_end_to_end_config
from tiny_magtkd import tiny_processor, tiny_stage_config, write_conversation_rows

from magtkd_hf import (
    MagtkdAudioModel,
    MagtkdDataCollator,
    MagtkdForEmotionRecognition,
    MagtkdFusionModel,
    MagtkdTextModel,
    MagtkdVideoModel,
)

# Prepended to a subprocess script: from then on `import magtkd_hf` fails, as on a machine without the package.
BLOCK_MAGTKD_HF = textwrap.dedent(
    """
    import sys

    class BlockMagtkdHf:
        def find_spec(self, name, path=None, target=None):
            if name == "magtkd_hf" or name.startswith("magtkd_hf."):
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, BlockMagtkdHf())
    """
)
# argv: a JSON list of [folder, inputs.pt, outputs.pt, expected class name]; one interpreter loads them all.
LOAD_WITHOUT_PACKAGE = BLOCK_MAGTKD_HF + textwrap.dedent(
    """
    import json

    import torch
    from transformers import AutoConfig, AutoModel

    try:
        import magtkd_hf
    except ImportError:
        pass
    else:
        raise SystemExit("magtkd_hf was importable")
    for folder, inputs, output, class_name in json.loads(sys.argv[1]):
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        model, info = AutoModel.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
        assert type(model).__name__ == class_name, (folder, type(model))
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        assert type(config).__name__ == type(model.config).__name__, (type(config), type(model.config))
        problems = {key: sorted(info[key]) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        assert not any(problems.values()), (folder, problems)
        batch = torch.load(inputs, weights_only=True)
        with torch.no_grad():
            result = model.eval()(**batch)
        torch.save({"logits": result.logits, "features": getattr(result, "features", None)}, output)
        print("loaded", class_name, type(config).__name__, type(model).__module__)
    """
)


def run_offline_script(script: str, arguments, tmp_path) -> subprocess.CompletedProcess:
    """`python -c script arguments...` offline, with a fresh HF_HOME, from `tmp_path`; fails the test if it fails."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_saved_folders_carry_their_code(tmp_path):
    # A fusion folder needs only the fusion's modules (no encoders).
    MagtkdFusionModel(tiny_config()).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert {"configuration_magtkd.py", "modeling_magtkd_fusion.py", "losses.py"} <= set(os.listdir(tmp_path))
    assert "modeling_magtkd_stages.py" not in os.listdir(tmp_path)
    assert auto_map == {
        "AutoConfig": "configuration_magtkd.MagtkdFusionConfig", "AutoModel": "modeling_magtkd_fusion.MagtkdFusionModel"
    }


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Every model class saved with its inputs; {name: (folder, inputs, model)}."""
    folder = tmp_path_factory.mktemp("remote_code")
    processor = tiny_processor()
    (folder / "media").mkdir()
    rows = write_conversation_rows(folder / "media", lengths=(2, 1))
    batch = MagtkdDataCollator(processor)(rows)
    fusion_batch = make_batch([4, 2], seed=5)
    fusion_batch.pop("labels")
    torch.manual_seed(0)
    models = {
        "text": (MagtkdTextModel(tiny_stage_config(processor, "text")),
                 {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}),
        "audio": (MagtkdAudioModel(tiny_stage_config(processor, "audio")),
                  {"input_values": batch["input_values"], "attention_mask": batch["audio_attention_mask"]}),
        "video": (MagtkdVideoModel(tiny_stage_config(processor, "video")), {"pixel_values": batch["pixel_values"]}),
        "fusion": (MagtkdFusionModel(tiny_config()), fusion_batch),
        "e2e": (MagtkdForEmotionRecognition(tiny_end_to_end_config(processor)),
                {key: value for key, value in batch.items() if key != "labels"}),
    }
    saved = {}
    for name, (model, inputs) in models.items():
        model.eval().save_pretrained(folder / name)
        torch.save(dict(inputs), folder / f"{name}-inputs.pt")
        saved[name] = (folder / name, folder / f"{name}-inputs.pt", model.eval(), inputs)
    return folder, saved


def test_every_model_class_loads_with_remote_code_and_gives_equal_outputs(saved_models):
    folder, saved = saved_models
    jobs = [
        [str(model_folder), str(inputs_path), str(folder / f"{name}-outputs.pt"), type(model).__name__]
        for name, (model_folder, inputs_path, model, _) in saved.items()
    ]
    result = run_offline_script(LOAD_WITHOUT_PACKAGE, [json.dumps(jobs)], folder)
    for name, (_, _, model, inputs) in saved.items():
        assert f"loaded {type(model).__name__} {type(model.config).__name__}" in result.stdout
        remote = torch.load(folder / f"{name}-outputs.pt", weights_only=True)
        with torch.no_grad():
            expected = model(**inputs)
        torch.testing.assert_close(remote["logits"], expected.logits, atol=0, rtol=0, msg=name)
        if name in ("text", "audio", "video"):
            torch.testing.assert_close(remote["features"], expected.features, atol=0, rtol=0, msg=name)


def test_the_constants_each_remote_code_side_declares_agree():
    """The model's and the processor's files travel separately (a fusion folder has no processor), so each declares
    the label to ignore and the modalities; they must be the same values."""
    from magtkd_hf import losses
    from magtkd_hf.configuration_magtkd import MODALITIES
    from magtkd_hf.processors import processing_magtkd

    assert processing_magtkd.IGNORE_INDEX == losses.IGNORE_INDEX == -100
    assert processing_magtkd.MODALITIES == MODALITIES
