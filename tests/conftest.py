"""Every test runs offline, with a throw-away Hugging Face cache (remote-code modules are cached there)."""

import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
# Set at import time, before any test module imports transformers (which reads HF_HOME once); removed again by
# `pytest_unconfigure`, so a run leaves no magtkd-hf-test-home-* folder behind.
TEST_HF_HOME = tempfile.mkdtemp(prefix="magtkd-hf-test-home-")
os.environ["HF_HOME"] = TEST_HF_HOME
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config):
    for marker in ("accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "slow",
                   "torch_compile_test"):
        config.addinivalue_line("markers", f"{marker}: used by transformers' common model tests")


def pytest_unconfigure(config):
    """Remove the throw-away cache at the very end of the session (after every test and fixture teardown; also
    after a failed or interrupted run). Each pytest-xdist worker imports this file and removes its own folder."""
    shutil.rmtree(TEST_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: one intra-op thread is as fast on an idle machine and far faster on a busy one (two
    OpenMP threads on two shared cores can slow tiny ops down a hundredfold)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
