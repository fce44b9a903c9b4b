"""Suite-wide set-up: quiet DeepSpeed, a private cache, one copy of the embedded data per process, and the
grouping that lets pytest-xdist split the suite over worker processes."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
# Each xdist worker gets its share of the cores, and so do the stage processes it starts (they inherit the
# variable): torch's default of every core per process runs 4 threads on 2 cores when both workers compute,
# and spinning OpenMP threads then cost far more than twice the time (an in-process attack took 344 s in the
# suite against 82 s alone).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    """Where embedded shards are generated once per session (the configs read $TRD_DATA)."""
    return str(tmp_path_factory.mktemp("trd-data"))


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory):
    os.environ.setdefault("TRD_CACHE", str(tmp_path_factory.mktemp("trd-cache")))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch came in before the variable
    yield


def work_unit(nodeid: str) -> str:
    """What one xdist worker runs as a whole: every SLURM test together, so that the session fixture starts one
    cluster (not one per worker, each with its own daemons and data), otherwise a whole file, so that its
    module-scoped runs happen once."""
    path = nodeid.split("::")[0]
    return "slurm" if path.startswith("tests/slurm/") or path == "tests/test_slurm_cluster.py" else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    # Not --dist loadgroup: with pytest >= 9.2 its xdist_group marks are silently ignored (pytest-xdist#1386).
    if config.getvalue("dist") != "load":  # a --dist the user asked for
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


def pytest_collection_modifyitems(config, items):
    # Longest work first (the SLURM runs, then the CLI runs), so that no long file starts last on one worker
    # while the other idles; --no-loadscope-reorder in pyproject.toml keeps this order.
    items.sort(key=lambda item: (work_unit(item.nodeid) != "slurm", item.get_closest_marker("slow") is None))


# The real one-node SLURM cluster for tests marked `slurm` (pytest puts tests/ on sys.path for conftest).
from slurm_cluster import slurm_cluster  # noqa: E402,F401
