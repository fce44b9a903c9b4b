"""slurm/sbatch_template.sh on the test cluster: a planned stage, run by plain sbatch + srun (no submitit),
on 2 ranks, requeued by its own USR2 trap, ends bit-identical to trd's submitit job of the same stage."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from slurm_cli import (
    REPO,
    TWO_RANKS,
    assert_same_weights,
    cli_env,
    planned,
    read,
    stage_dir,
    wait_final,
    wait_for_checkpoint,
    weights,
)
from slurm_cluster import job_info, wait_until

TEMPLATE = REPO / "slurm" / "sbatch_template.sh"


@pytest.mark.slurm
def test_template_runs_a_planned_stage_on_two_ranks_and_requeues_itself_on_usr2(
        slurm_cluster, data_root, tmp_path, two_rank_run, slurm_jobs):
    stage = planned(TWO_RANKS, tmp_path, data_root)["pretrain"].dir
    reference = stage_dir(two_rank_run[0], "pretrain")
    assert stage.name == reference.name  # the same stage, planned under another out_root
    env = cli_env(slurm_cluster, data_root, TRD_PYTHON=sys.executable)
    proc = subprocess.run(["sbatch", "--parsable", f"--partition={slurm_cluster.partition}", "--ntasks-per-node=2",
                           "--cpus-per-task=1", "--mem=2G", f"--output={stage}/slurm-%j.out", str(TEMPLATE),
                           str(stage)], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    job_id = proc.stdout.strip()
    slurm_jobs.append(job_id)
    log = stage / f"slurm-{job_id}.out"

    # What --signal=B:USR2@120 sends before the time limit, and a preemption notice may: USR2 to the script.
    checkpoint = wait_for_checkpoint(stage, job_id)
    subprocess.run(["scancel", "--batch", "--signal=USR2", job_id], check=True)
    wait_until(lambda: job_info(job_id).get("Restarts") == "1", 60, "the template's requeue")
    assert wait_final([job_id], 300)[job_id] == "COMPLETED", log.read_text()[-3000:]

    text = log.read_text()
    assert f"trd: got USR2: requeueing job {job_id}" in text
    resumed = re.findall(r"trd: pretrain resumes from its checkpoint \(.*global_step (\d+)", text)
    assert len(resumed) == 1 and int(resumed[0]) >= checkpoint["global_step"] > 0, resumed
    metrics = read(stage / "metrics.json")
    assert metrics["status"] == "done" and metrics["world_size"] == 2
    assert metrics["log"] == str(log)  # named by the template, so status.py can point at it
    assert_same_weights(weights(stage), weights(reference))
