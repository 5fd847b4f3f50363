"""Every test runs offline, with a throw-away Hugging Face cache (remote-code modules are cached there)."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="magtkd-hf-test-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: one intra-op thread is as fast on an idle machine and far faster on a busy one (two
    OpenMP threads on two shared cores can slow tiny ops down a hundredfold)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
