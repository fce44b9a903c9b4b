"""Suite-wide set-up: quiet DeepSpeed, a private cache, and one copy of the embedded data for all runs."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    """Where embedded shards are generated once per session (the configs read $TRD_DATA)."""
    return str(tmp_path_factory.mktemp("trd-data"))


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory):
    os.environ.setdefault("TRD_CACHE", str(tmp_path_factory.mktemp("trd-cache")))
    yield


# The real one-node SLURM cluster for tests marked `slurm` (pytest puts tests/ on sys.path for conftest).
from slurm_cluster import slurm_cluster  # noqa: E402,F401
