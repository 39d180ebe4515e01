import os
from pathlib import Path

import pytest

# Never reach for the network in tests: timm/huggingface fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CELEBA_SAMPLE = SHARED / "celeba-sample"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A per-session cache folder for synthetic sets and decoded images."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["SLIMBENCH_CACHE"] = str(path)
    return str(path)


@pytest.fixture(scope="session")
def celeba_sample():
    if not (CELEBA_SAMPLE / "list_attr_celeba.txt").is_file():
        pytest.skip("../shared/celeba-sample is absent")
    return CELEBA_SAMPLE


@pytest.fixture(scope="session")
def tiny_synthetic(cache_dir):
    """A 60-image synthetic set (48/6/6), loaded."""
    from bench.data import load_data

    return load_data({"synthetic_images": 60, "synthetic_seed": 0, "cache_dir": cache_dir})
