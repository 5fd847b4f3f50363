"""A saved folder loads with `trust_remote_code=True` where `magtkd_hf` cannot be imported at all."""

import os
import subprocess
import sys
import textwrap

import torch
from test_fusion_model import make_batch, tiny_config

from magtkd_hf import MagtkdFusionModel

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
LOAD_WITHOUT_PACKAGE = BLOCK_MAGTKD_HF + textwrap.dedent(
    """
    import torch
    from transformers import AutoConfig, AutoModel

    folder, inputs, output = sys.argv[1:4]
    try:
        import magtkd_hf
    except ImportError:
        pass
    else:
        raise SystemExit("magtkd_hf was importable")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__name__ == "MagtkdFusionModel", type(model)
    assert "transformers_modules" in type(model).__module__, type(model).__module__
    batch = torch.load(inputs, weights_only=True)
    with torch.no_grad():
        torch.save(model(**batch).logits, output)
    print("loaded", type(config).__name__, type(model).__module__)
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


def test_saved_folder_loads_with_remote_code_and_gives_equal_outputs(tmp_path):
    model = MagtkdFusionModel(tiny_config()).eval()
    batch = make_batch([4, 2], seed=5)
    batch.pop("labels")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    assert {"configuration_magtkd.py", "modeling_magtkd.py", "losses.py"} <= set(os.listdir(folder))
    torch.save(batch, tmp_path / "inputs.pt")
    result = run_offline_script(LOAD_WITHOUT_PACKAGE, [folder, tmp_path / "inputs.pt", tmp_path / "logits.pt"], tmp_path)
    assert "loaded MagtkdFusionConfig" in result.stdout
    with torch.no_grad():
        expected = model(**batch).logits
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), expected, atol=0, rtol=0)
