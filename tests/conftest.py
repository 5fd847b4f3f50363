"""Every test runs offline, with a throw-away Hugging Face cache (remote-code modules are cached there)."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="magtkd-hf-test-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
