import pytest


@pytest.fixture(scope="module")
def process_group():
    """A one-process gloo group, as a stage job has, so DeepSpeed engines can be built in the test process."""
    from trd.engine.distributed import DistEnv, free_port, init_distributed

    env = DistEnv(master_port=free_port())
    init_distributed(env)
    return env
