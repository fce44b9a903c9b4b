"""Runs one stage from its directory: the entry point of every job (submitit, srun or torchrun).

    python -m trd.runner <stage dir>      # under torchrun/srun, one process per rank
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import submitit
import torch

from trd import contract
from trd.atomic import read_json
from trd.engine.context import StageContext
from trd.engine.distributed import (
    barrier,
    broadcast,
    detect_env,
    init_distributed,
    shutdown_distributed,
)
from trd.engine.host_memory import keep_freed_host_memory
from trd.losses.finite import NonFiniteError
from trd.metrics import read_metrics, write_metrics
from trd.owner import release, this_job, try_acquire
from trd.provenance import code_version
from trd.stages import get_kind

OWNER_POLL_S = 2.0  # how often a job that waits for a stage's owner looks again


def _job_log() -> str | None:
    try:
        return str(submitit.JobEnvironment().paths.stderr)
    except RuntimeError:  # not a submitit job: srun/torchrun scripts name their log themselves
        return os.environ.get("TRD_JOB_LOG")


def run_stage(stage_dir: str | Path) -> dict:
    stage_dir = Path(stage_dir)
    spec = read_json(stage_dir / contract.STAGE_FILE)
    if spec is None:
        raise FileNotFoundError(f"{stage_dir / contract.STAGE_FILE} is missing: plan the experiment with "
                                f"launch/submit.py first")
    done = read_metrics(stage_dir)
    if done.get("status") == contract.DONE:
        return done
    kind = get_kind(spec["kind"])
    if spec.get("kind_version") != kind.version:
        raise RuntimeError(f"{stage_dir} was planned for version {spec.get('kind_version')} of stage kind "
                           f"{kind.name}, this code has version {kind.version}: submit the experiment again to "
                           f"replan it")
    env = detect_env()
    if not torch.cuda.is_available():
        # On CPU every step's tensors live in host memory: keep it, as CUDA's caching allocator would.
        keep_freed_host_memory()
    init_distributed(env)
    me = this_job()
    finished = _claim(stage_dir, spec["name"], me, env)
    if finished is not None:
        return finished
    try:
        return _run_owned(stage_dir, spec, kind, env)
    finally:
        if env.is_main:
            release(stage_dir, me)


def _claim(stage_dir: Path, name: str, me: dict, env) -> dict | None:
    """Makes this job the stage's owner, waiting while another live job owns it. Returns the stage's metrics if
    that job finished it meanwhile (nothing is left to do), else None. Every rank gets rank 0's answer."""
    answer: list = [None]
    if env.is_main:
        announced = False
        while (owner := try_acquire(stage_dir, me)) is not None:
            if not announced:
                print(f"trd: {name} is being run by job {owner['job_id']} on {owner['host']}; waiting for it instead "
                      f"of training beside it", file=sys.stderr, flush=True)
                announced = True
            time.sleep(OWNER_POLL_S)
        done = read_metrics(stage_dir)
        if done.get("status") == contract.DONE:
            release(stage_dir, me)
            answer = [done]
    return broadcast(answer)[0]


def _run_owned(stage_dir: Path, spec: dict, kind, env) -> dict:
    ctx = StageContext(kind=spec["kind"], name=spec["name"], config=spec["config"], dir=stage_dir,
                       inputs={role: Path(d) for role, d in spec["inputs"].items()}, env=env)
    base = {"kind": ctx.kind, "stage": ctx.name, "hash": spec["hash"], "code": code_version(),
            contract.MODEL_LABELS: spec[contract.MODEL_LABELS], contract.ATTACK_LABELS: spec[contract.ATTACK_LABELS]}
    log_path = _job_log()
    resumed = ctx.ckpt.progress()
    if env.is_main and resumed is not None:
        # A requeued or restarted job says where it picks up, so its log explains why it starts mid-way.
        where = ", ".join(f"{key} {value}" for key, value in resumed.items())
        print(f"trd: {ctx.name} resumes from its checkpoint ({where})", file=sys.stderr, flush=True)
    if env.is_main:
        write_metrics(stage_dir, {**base, "status": contract.RUNNING, "log": log_path, "world_size": env.world_size})
    start = time.time()
    try:
        metrics = kind.run(ctx)
    except BaseException as exc:
        status = contract.DIVERGED if isinstance(exc, NonFiniteError) else contract.FAILED
        if env.is_main and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            write_metrics(stage_dir, {**base, "status": status, "error": f"{type(exc).__name__}: {exc}",
                                      "log": log_path, "traceback": traceback.format_exc()})
        raise
    finally:
        ctx.log.close()
    barrier()
    result = {**base, **metrics, "status": contract.DONE, "log": log_path, "world_size": env.world_size,
              "timings": {**metrics.get("timings", {}), "stage_seconds": round(time.time() - start, 2)}}
    if env.is_main:
        write_metrics(stage_dir, result)
    shutdown_distributed()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m trd.runner <stage dir>", file=sys.stderr)
        return 2
    os.environ.setdefault("TRD_STAGE_DIR", argv[0])
    run_stage(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
