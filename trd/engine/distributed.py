"""Who am I in the job: rank/world from torchrun, SLURM (through submitit, or a plain srun) or nothing at all."""
from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _port_from_job_id(job_id: str) -> int:
    # Every task of one job must agree on the port without talking to each other first;
    # the job id is the one thing they share, and distinct concurrent jobs get distinct ports.
    digits = "".join(ch for ch in str(job_id) if ch.isdigit()) or "0"
    return 20000 + int(digits) % 20000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list ("gpu[03-04],gpu07")."""
    proc = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return proc.stdout.split()[0]


def _srun_env() -> DistEnv | None:
    """The ranks of a job step started by srun (slurm/sbatch_template.sh), or None outside a multi-task step.

    Only srun's steps have SLURM_STEP_*: the batch script itself also sees SLURM_PROCID=0 and SLURM_NTASKS, and
    a python run there directly is one process, not rank 0 of a world that never comes.
    """
    if "SLURM_STEP_ID" not in os.environ or int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) < 2:
        return None
    nodes = int(os.environ.get("SLURM_STEP_NUM_NODES", "1"))
    master = os.environ.get("MASTER_ADDR") or (
        _first_host(os.environ["SLURM_STEP_NODELIST"]) if nodes > 1 else "127.0.0.1")
    # Several steps of one job may train at once: the step id keeps their ports apart.
    port = os.environ.get("MASTER_PORT") or _port_from_job_id(os.environ["SLURM_JOB_ID"] + os.environ["SLURM_STEP_ID"])
    return DistEnv(
        rank=int(os.environ["SLURM_PROCID"]),
        world_size=int(os.environ["SLURM_STEP_NUM_TASKS"]),
        local_rank=int(os.environ["SLURM_LOCALID"]),
        master_addr=master,
        master_port=int(port),
    )


def detect_env() -> DistEnv:
    """Reads the launcher's environment: torchrun first, then a submitit job (SLURM or local), then a plain
    srun step, else one process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return DistEnv(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            master_addr=os.environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(os.environ.get("MASTER_PORT", 29500)),
        )
    if "SUBMITIT_EXECUTOR" in os.environ:
        import submitit

        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            return DistEnv(
                rank=job.global_rank,
                world_size=job.num_tasks,
                local_rank=job.local_rank,
                master_addr=job.hostnames[0] if job.num_nodes > 1 else "127.0.0.1",
                master_port=_port_from_job_id(job.job_id),
            )
        return DistEnv(master_port=free_port())
    return _srun_env() or DistEnv(master_port=free_port())


def init_distributed(env: DistEnv) -> None:
    """Initialises torch.distributed through DeepSpeed (nccl on GPU, gloo on CPU), exactly once."""
    os.environ.update(
        RANK=str(env.rank),
        WORLD_SIZE=str(env.world_size),
        LOCAL_RANK=str(env.local_rank),
        LOCAL_SIZE=os.environ.get("LOCAL_SIZE", str(env.world_size)),
        MASTER_ADDR=env.master_addr,
        MASTER_PORT=str(env.master_port),
    )
    if dist.is_available() and dist.is_initialized():
        return
    import deepspeed

    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
    else:
        _skip_deepspeed_shared_memory_allreduce()
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", verbose=False)


def _skip_deepspeed_shared_memory_allreduce() -> None:
    """On CPU, DeepSpeed (0.19) builds a shared-memory all-reduce for inference and maps its buffers under
    /dev/shm (tens of MB per process) without ever unlinking them: a test suite or a long sweep fills
    /dev/shm. Training never uses it (gloo does the reductions), so trd does not build it."""
    import importlib

    # importlib, not `import deepspeed.comm.torch as ...`: deepspeed.comm also has an attribute named torch.
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def device_for(env: DistEnv) -> torch.device:
    return torch.device("cuda", env.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums a few scalars over ranks (no-op on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _several_ranks() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast(objects: list) -> list:
    """Rank 0's list of small picklable objects on every rank (as is on one process)."""
    if _several_ranks():
        dist.broadcast_object_list(objects, src=0)
    return objects


def barrier() -> None:
    if _several_ranks():
        dist.barrier()


def shutdown_distributed() -> None:
    """Tears the process group down once every rank is done. Left to interpreter exit, gloo's threads can
    abort the process ("terminate called without an active exception"): a finished stage would then exit
    non-zero and SLURM would cancel its dependents."""
    if _several_ranks():
        dist.barrier()
        dist.destroy_process_group()
