"""trd's own SLURM path (launcher=slurm) against the real one-node test cluster: launch/submit.py submits,
slurmctld schedules, and what happened is read back from SLURM's records and the stage directories."""
from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from slurm_cli import (
    DEMO,
    REPO,
    assert_same_weights,
    cli_env,
    jobs,
    metrics,
    plan,
    planned,
    read,
    slurm_launcher,
    stage_dir,
    status,
    submit,
    track,
    wait_final,
    wait_for_checkpoint,
    weights,
)
from slurm_cluster import job_info, wait_until

from trd.data.catalog import build_catalog
from trd.data.embedded import ensure_role_shards
from trd.data.plan import plan_rank
from trd.data.role import parse_role
from trd.data.urls import expand_urls


def _log(job: dict, stream: str) -> str:
    return Path(job[stream]).read_text(errors="replace")


# ---------------------------------------------------------------- the demo, preempted once, beside a local run


@pytest.fixture(scope="module")
def demo(slurm_cluster, data_root, tmp_path_factory, slurm_jobs):
    out, local_out = tmp_path_factory.mktemp("slurm-demo"), tmp_path_factory.mktemp("local-demo")
    # The reference: the same overrides and seed with launcher=local, running meanwhile.
    with open(local_out / "submit.log", "w") as log:
        local = subprocess.Popen([sys.executable, "launch/submit.py", *DEMO, f"out_root={local_out}"], cwd=REPO,
                                 env=cli_env(None, data_root), text=True, stdout=log, stderr=subprocess.STDOUT)
    exp = out / "demo"
    # The jobs wait for a gate before starting python: pretraining is a few seconds of steps, which a loaded
    # machine could finish before this process, itself just started, looks for its first checkpoint.
    gate, gate_script = out / "go", out / "gate.sh"
    gate_script.write_text(f"while [ ! -e {gate} ]; do sleep 0.2; done\n")
    try:
        try:
            proc = submit(*DEMO, *slurm_launcher(slurm_cluster), f"out_root={out}",
                          f"launcher.setup=['source {gate_script}']", cluster=slurm_cluster, data_root=data_root)
        finally:
            track(exp, slurm_jobs)
        ids = jobs(exp)
        at_submission = {name: job_info(job) for name, job in ids.items()}
        gate.touch()
        # A preemption notice for the pretraining once it has a checkpoint to resume from: what submitit's
        # --signal and a preempting scheduler deliver (USR2 to the job step).
        checkpoint = wait_for_checkpoint(stage_dir(exp, "pretrain"), ids["pretrain"])
        subprocess.run(["scancel", "--signal=USR2", ids["pretrain"]], check=True)
        wait_until(lambda: job_info(ids["pretrain"]).get("Restarts") == "1", 60, "the pretraining job's requeue")
        while_requeued = {name: job_info(job) for name, job in ids.items()}
        final = wait_final(ids.values(), 600)
        local.wait(timeout=600)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    assert local.returncode == 0, (local_out / "submit.log").read_text()[-4000:]
    return SimpleNamespace(exp=exp, local_exp=local_out / "demo", proc=proc, ids=ids,
                           at_submission=at_submission, checkpoint=checkpoint, while_requeued=while_requeued,
                           final=final)


@pytest.mark.slurm
def test_demo_runs_as_one_slurm_job_per_stage_with_afterok_and_ends_like_the_local_launcher(demo):
    exp, ids, stages = demo.exp, demo.ids, plan(demo.exp)
    # The command returned once the jobs were queued, saying where to look.
    out = demo.proc.stdout
    assert f"trd: experiment {exp}" in out and f"python launch/status.py {exp}" in out
    assert all(f"{name}={job}" in out for name, job in ids.items())
    assert demo.at_submission["transfer"]["JobState"] == "PENDING", demo.at_submission["transfer"]
    # One job per stage, each depending exactly on the jobs of its inputs, cancelled if one of them fails.
    assert set(ids) == set(stages) and len(set(ids.values())) == len(ids)
    assert not list(exp.rglob("%j"))  # submitit's files in one folder, exp/jobs/, never a literal "%j" folder
    assert read(exp / "dispatch.json")["jobs"] == ids
    for name, spec in stages.items():
        info = demo.at_submission[name]
        inputs = [ids[d] for d in spec["inputs"].values()]
        if inputs:
            assert re.fullmatch(",".join(rf"afterok:{job}\(unfulfilled\)" for job in inputs), info["Dependency"]), info
            assert info["KillOInInvalidDependent"] == "Yes"
        else:
            assert info["Dependency"] == "(null)", info
    assert set(stages["transfer"]["inputs"].values()) == {"pretrain"}
    assert stages["tgt"]["inputs"] == {}  # so the scratch baseline never waits on pretraining
    assert set(demo.final.values()) == {"COMPLETED"}, demo.final
    # Same stages (same hashes), same seed: exactly the accuracies of the local launcher.
    slurm, local = metrics(exp), metrics(demo.local_exp)
    assert {n: Path(s["dir"]).name for n, s in stages.items()} == {
        n: Path(s["dir"]).name for n, s in plan(demo.local_exp).items()}
    for name in stages:
        assert slurm[name]["status"] == "done", (name, slurm[name])
        assert slurm[name].get("acc") == local[name].get("acc"), name
    assert set(slurm["evaluate/transfer"]["acc"]) == {"source", "target"}


@pytest.mark.slurm
def test_preempted_stage_checkpoints_is_requeued_and_resumes_to_the_uninterrupted_weights(demo):
    job_id = demo.ids["pretrain"]
    info = job_info(job_id)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1")
    # Its dependents waited through the requeue.
    assert demo.while_requeued["transfer"]["JobState"] == "PENDING"
    assert job_info(demo.ids["transfer"])["StartTime"] >= info["EndTime"]
    stage = stage_dir(demo.exp, "pretrain")
    job = read(stage / "job.json")
    submitit_log = _log(job, "stdout")
    assert "Caught signal SIGUSR2" in submitit_log and "this job is preempted" in submitit_log
    # submitit's "Requeued job" line is not asserted: `scontrol requeue`, run from inside the job, can be
    # killed by the very SIGTERM with which SLURM stops the requeued step, before submitit logs it. The
    # restart count above and the resume below are what show the requeue.
    assert "Calling checkpoint method" in submitit_log
    resumed = re.findall(r"trd: pretrain resumes from its checkpoint \((.*)\)", _log(job, "stderr"))
    assert len(resumed) == 1, resumed
    at = dict(field.split(" ") for field in resumed[0].split(", "))
    assert int(at["global_step"]) >= demo.checkpoint["global_step"] > 0
    assert metrics(demo.exp)["pretrain"]["steps"] == 15
    # The uninterrupted run is the local launcher's, of the same stage (same hash).
    assert_same_weights(weights(stage), weights(stage_dir(demo.local_exp, "pretrain")))


@pytest.mark.slurm
def test_whole_demo_goes_in_as_job_arrays_per_fan_out_with_exact_dependencies(slurm_cluster, data_root, tmp_path,
                                                                              slurm_jobs):
    # Every stage of the demo as configured (attacks, reports, ...), submitted held: SLURM records the jobs,
    # arrays and dependencies, and nothing runs.
    exp = tmp_path / "demo"
    try:
        submit("+exp=demo", "pretrain.epochs=1", "transfer.epochs=1", *slurm_launcher(slurm_cluster),
               "+launcher.additional.hold=true", f"out_root={tmp_path}", cluster=slurm_cluster, data_root=data_root)
        ids = jobs(exp)
        records = {name: job_info(job) for name, job in ids.items()}
    finally:
        track(exp, slurm_jobs)
        subprocess.run(["scancel", *jobs(exp).values()], capture_output=True)
    stages = plan(exp)
    assert set(ids) == set(stages)
    arrays: dict[str, list[str]] = {}
    for name, job in sorted(ids.items(), key=lambda item: [int(part) for part in item[1].split("_")]):
        arrays.setdefault(job.split("_")[0], []).append(name)
    fan_outs = [names for names in arrays.values() if len(names) > 1]
    assert fan_outs, arrays  # the demo attacks each released model with several attackers
    for base, names in arrays.items():
        if len(names) > 1:
            assert [ids[n] for n in names] == [f"{base}_{i}" for i in range(len(names))]
            assert len({stages[n]["kind"] for n in names}) == 1, names
        for task, name in enumerate(names):
            record = records[name]
            assert record["JobState"] == "PENDING" and record["Reason"] == "JobHeldUser", record
            inputs = [ids[d] for d in stages[name]["inputs"].values()]
            dependency = re.findall(r"(afterok|aftercorr):([^(]+)\(unfulfilled\)", record["Dependency"])
            if not inputs:
                assert record["Dependency"] == "(null)", (name, record["Dependency"])
            elif dependency[0][0] == "aftercorr":  # task i after task i of the array its input is in
                assert dependency == [("aftercorr", inputs[0].split("_")[0] + "_*")] and inputs[0].endswith(f"_{task}")
            else:  # exactly its own inputs' jobs, whatever the other tasks of its array need
                assert sorted(job for _, job in dependency) == sorted(inputs), (name, record["Dependency"])


# ---------------------------------------------------------------- ranks


@pytest.mark.slurm
def test_two_task_job_runs_two_deepspeed_ranks_on_disjoint_shards(two_rank_run):
    exp, proc = two_rank_run
    job_id = jobs(exp)["pretrain"]
    # launcher.wait=true: the command returned once the job had ended, with the outcome.
    assert re.search(r"^trd: [\d:]+ pretrain: done$", proc.stdout, re.M), proc.stdout
    assert "trd: finished, 1 stages: 1 done" in proc.stdout
    info = job_info(job_id)
    assert (info["JobState"], info["NumTasks"]) == ("COMPLETED", "2")
    done = metrics(exp)["pretrain"]
    assert done["status"] == "done" and done["world_size"] == 2
    # Each task is one rank and returns its own result: both saw a world of 2 and ran the same steps.
    folder = Path(read(stage_dir(exp, "pretrain") / "job.json")["stdout"]).parent
    results = []
    for task in (0, 1):
        with open(folder / f"{job_id}_{task}_result.pkl", "rb") as f:
            outcome, result = pickle.load(f)
        assert outcome == "success", result
        results.append(result)
    assert [r["world_size"] for r in results] == [2, 2]
    assert results[0]["steps"] == results[1]["steps"] == done["steps_per_epoch"] == 400 // 64
    # What each rank read is a pure function of (counts, seed, epoch, rank, world): the loader's own plan.
    config = read(stage_dir(exp, "pretrain") / "stage.json")["config"]
    catalog = build_catalog(parse_role(config["source"]), "train", skip_corrupt=False)
    per_rank = config["train"]["batch_size"] // 2
    plans = [plan_rank(catalog.counts, train=True, batch_size=per_rank, seed=config["seed"], epoch=0, rank=rank,
                       world_size=2, num_workers=config["data_options"]["num_workers"]) for rank in (0, 1)]
    shards = [{s for worker in p for s in worker.shard_ids} for p in plans]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(len(catalog.urls)))
    assert [sum(w.num_samples for w in p) for p in plans] == [done["steps"] * per_rank] * 2


# ---------------------------------------------------------------- time limits


@pytest.mark.slurm
def test_stage_past_its_time_limit_is_requeued_max_num_timeout_times_then_fails(slurm_cluster, data_root, tmp_path,
                                                                                slurm_jobs):
    # slurmctld checks time limits every 30 s and sends the warning signal at the first check where
    # now + signal delay + 30 s >= end (so up to 30 s early): with a 1 min limit and a 15 s delay, USR2 comes
    # 15 to 45 s into each run and the kill at 60 to 90 s. With a 45 s delay the condition held from the start
    # and USR2 could arrive 0.1 s in, before python ran (seen in CI: exit by signal 12, empty log, Restarts 0).
    # trd.job keeps torch out of the job's unpickling, so submitit's handler is in place within a second or
    # two even under load. 500 epochs (about 15 min on an idle 2-core box) never fit into two such runs.
    overrides = ["+exp=demo", "stages=[pretrain]", "pretrain.epochs=500", "pretrain.checkpoint_every=4",
                 "+data.source.fraction=0.25", *slurm_launcher(slurm_cluster), "launcher.timeout_min=1",
                 "launcher.signal_delay_s=15", "launcher.max_num_timeout=1", f"out_root={tmp_path}"]
    try:
        submit(*overrides, cluster=slurm_cluster, data_root=data_root)
    finally:
        track(tmp_path / "demo", slurm_jobs)
    job_id = jobs(tmp_path / "demo")["pretrain"]
    state = wait_final([job_id], 240)[job_id]
    info = job_info(job_id)
    assert (info["TimeLimit"], info["Restarts"]) == ("00:01:00", "1")
    stage = stage_dir(tmp_path / "demo", "pretrain")
    job = read(stage / "job.json")
    submitit_log = _log(job, "stdout")
    # The first signal is always handled (it requeued the job, checked below); the second can be lost to
    # submitit 1.5.4's handler race under load, and the job then ends TIMEOUT (handled below).
    assert submitit_log.count("this job is timed-out") >= 1, submitit_log
    # The requeue itself shows in Restarts above: submitit's "Requeued job" line can be lost when SLURM's
    # SIGTERM to the requeued step kills `scontrol requeue` before submitit logs it.
    assert "Calling checkpoint method" in submitit_log
    report = status(tmp_path / "demo", slurm_cluster)
    assert report.returncode == 1
    assert re.search(r"pretrain\s+failed", report.stdout) and f"log: {job['stderr']}" in report.stdout
    if state == "FAILED":  # submitit gave up, and the stage recorded why
        assert "Job not requeued because: timed-out too many times" in submitit_log
        assert "timed-out too many times" in report.stdout
    else:
        # submitit 1.5.4 raises its give-up error inside its USR2 handler; when that handler runs within the
        # SIGCONT handler's log call (SLURM sends SIGCONT first), logging swallows the error, the stage trains
        # on and SLURM ends it at the limit. status.py then reads the outcome from SLURM's record.
        assert state == "TIMEOUT", state
        assert f"SLURM job {job_id} ended TIMEOUT" in report.stdout


# ---------------------------------------------------------------- failures and resubmission


@pytest.mark.slurm
def test_failed_stage_cancels_its_dependents_and_resubmission_reruns_only_what_is_not_done(
        slurm_cluster, data_root, tmp_path, slurm_jobs):
    # A copy of the source shards with one truncated, as if still being copied: pretraining fails on it,
    # the scratch baseline (target data only) does not.
    source = planned(DEMO, tmp_path / "plan", data_root, write=False)["pretrain"].config["source"]
    ensure_role_shards(source)
    copies = tmp_path / "source"
    copies.mkdir()
    for split in ("train", "test"):
        for url in expand_urls(source[split]):
            shutil.copy(url, copies)
    truncated = copies / Path(expand_urls(source["train"])[1]).name
    original = truncated.read_bytes()
    truncated.write_bytes(original[: len(original) // 2])
    exp = tmp_path / "out" / "demo"
    overrides = ["+exp=demo", "stages=[pretrain,transfer]", "pretrain.epochs=1", "transfer.epochs=1",
                 "+data.source.fraction=0.1", "data.source.embedded=null",
                 f"data.source.train='{copies}/{Path(source['train']).name}'",
                 f"data.source.test='{copies}/{Path(source['test']).name}'",
                 *slurm_launcher(slurm_cluster), "launcher.wait=true", f"out_root={tmp_path / 'out'}"]
    try:
        first = submit(*overrides, cluster=slurm_cluster, data_root=data_root, check=False)
    finally:
        track(exp, slurm_jobs)
    assert first.returncode == 1, first.stdout + first.stderr
    ids = jobs(exp)
    states = {name: job_info(job) for name, job in ids.items()}
    assert states["pretrain"]["JobState"] == "FAILED"
    assert (states["transfer"]["JobState"], states["transfer"]["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
    assert states["tgt"]["JobState"] == "COMPLETED"
    before = metrics(exp)
    assert before["pretrain"]["status"] == "failed" and "corrupt or truncated" in before["pretrain"]["error"]
    assert before["transfer"] is None  # never started
    log = before["pretrain"]["log"]
    assert "corrupt or truncated" in Path(log).read_text()
    assert re.search(r"^trd: pretrain failed: .*corrupt or truncated.*\n +its log: " + re.escape(log), first.stdout,
                     re.M), first.stdout
    assert "trd: not run (an input failed or the job was cancelled): transfer" in first.stdout
    assert re.search(r"^trd: to run only what is not done .*: python launch/submit.py \+exp=demo .*launcher.wait=true",
                     first.stdout, re.M), first.stdout
    report = status(exp, slurm_cluster)
    assert report.returncode == 1
    assert re.search(r"pretrain\s+failed\n.*corrupt or truncated.*\n\s+log: " + re.escape(log), report.stdout)
    assert re.search(r"transfer\s+not run\n.*an input stage failed", report.stdout), report.stdout

    truncated.write_bytes(original)  # the copy completes; nothing else changes
    second = submit(*overrides, cluster=slurm_cluster, data_root=data_root)
    track(exp, slurm_jobs)
    assert "trd: reused finished stages: tgt" in second.stdout
    again = jobs(exp)
    assert re.search(r"^trd: jobs (.*)$", second.stdout, re.M).group(1) == (
        f"pretrain={again['pretrain']}, transfer={again['transfer']}")
    assert again["tgt"] == ids["tgt"] and again["pretrain"] != ids["pretrain"] and again["transfer"] != ids["transfer"]
    after = metrics(exp)
    assert all(m["status"] == "done" for m in after.values()), after
    assert after["tgt"] == before["tgt"]
    assert status(exp, slurm_cluster).returncode == 0


# ---------------------------------------------------------------- sweeps


@pytest.mark.slurm
def test_sweep_submits_shared_pretraining_once_and_each_fan_out_as_one_array(slurm_cluster, data_root, tmp_path,
                                                                            slurm_jobs):
    # Three learning rates, the last of which diverges: its evaluation must not run, the others' must.
    exp = tmp_path / "demo"
    try:
        proc = submit("-m", "+exp=demo", "stages=[pretrain,transfer,evaluate]", "transfer.scratch_baseline=false",
                      "pretrain.epochs=1", "transfer.epochs=1", "+data.source.fraction=0.1",
                      *slurm_launcher(slurm_cluster), f"out_root={tmp_path}", "transfer.optim.lr=0.01,0.02,1e30",
                      cluster=slurm_cluster, data_root=data_root)
    finally:
        track(exp, slurm_jobs)
    ids = jobs(exp)
    at_submission = {name: job_info(job) for name, job in ids.items()}
    stages = plan(exp)
    kinds = {kind: [n for n, s in stages.items() if s["kind"] == kind] for kind in ("pretrain", "transfer", "evaluate")}
    assert len(kinds["pretrain"]) == 1 and len(kinds["transfer"]) == len(kinds["evaluate"]) == 3
    assert all(f"{name}={ids[name]}" in proc.stdout for name in stages)
    pretrain = ids[kinds["pretrain"][0]]
    assert all(stages[n]["inputs"] == {"pretrained": kinds["pretrain"][0]} for n in kinds["transfer"])
    # The transfers: one array, afterok on the one pretraining job.
    transfers = sorted(kinds["transfer"], key=lambda n: ids[n])
    array = ids[transfers[0]].split("_")[0]
    assert [ids[n] for n in transfers] == [f"{array}_{i}" for i in range(3)]
    for name in transfers:
        assert at_submission[name]["Dependency"] == f"afterok:{pretrain}(unfulfilled)", at_submission[name]
    # The evaluations: one array, task i after transfer task i only (aftercorr), not after all three.
    evaluations = sorted(kinds["evaluate"], key=lambda n: ids[n])
    array_e = ids[evaluations[0]].split("_")[0]
    assert [ids[n] for n in evaluations] == [f"{array_e}_{i}" for i in range(3)]
    assert [stages[n]["inputs"]["model"] for n in evaluations] == transfers
    assert at_submission[evaluations[0]]["Dependency"] == f"aftercorr:{array}_*(unfulfilled)"

    final = wait_final(ids.values(), 400)
    lr = {n: read(Path(stages[n]["dir"]) / "stage.json")["config"]["train"]["optim"]["lr"] for n in transfers}
    assert sorted(lr.values()) == [0.01, 0.02, 1e30]
    done = metrics(exp)
    for transfer, evaluate in zip(transfers, evaluations):
        if lr[transfer] == 1e30:
            assert (final[ids[transfer]], done[transfer]["status"]) == ("FAILED", "diverged")
            info = job_info(ids[evaluate])
            assert (info["JobState"], info["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
        else:
            assert final[ids[transfer]] == final[ids[evaluate]] == "COMPLETED"
            assert done[evaluate]["status"] == "done"
    assert final[pretrain] == "COMPLETED"
    assert status(exp, slurm_cluster).returncode == 1  # the diverged point


# ---------------------------------------------------------------- bad input


def test_slurm_launcher_without_slurm_commands_is_a_one_line_error(tmp_path, data_root):
    path = os.path.dirname(sys.executable)  # this python, and no SLURM
    assert shutil.which("sbatch", path=path) is None
    proc = submit(*DEMO, "launcher=slurm", f"out_root={tmp_path}", cluster=None, data_root=data_root, check=False,
                  env={**cli_env(None, data_root), "PATH": path})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "trd: error: launcher=slurm needs the SLURM command 'sbatch', which is not on PATH: "
        "run on a SLURM login node, or use launcher=local")


def _known_jobs() -> set[str]:
    proc = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%F"], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


@pytest.mark.slurm
def test_unknown_partition_is_refused_in_one_line_and_nothing_is_submitted(slurm_cluster, data_root, tmp_path):
    before = _known_jobs()
    proc = submit(*DEMO, *slurm_launcher(slurm_cluster, partition="no_such_partition"), f"out_root={tmp_path}",
                  cluster=slurm_cluster, data_root=data_root, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"trd: error: launcher.partition='no_such_partition' is not a partition of this cluster: use one of "
        f"{slurm_cluster.partition}")
    assert _known_jobs() == before
    assert jobs(tmp_path / "demo") == {}


def test_a_request_no_node_can_run_is_refused_before_anything_is_submitted(slurm_cluster, data_root, tmp_path):
    before = _known_jobs()
    proc = submit(*DEMO, *slurm_launcher(slurm_cluster), "launcher.cpus_per_task=64", f"out_root={tmp_path}",
                  cluster=slurm_cluster, data_root=data_root, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("trd: error: launcher.tasks_per_node x launcher.cpus_per_task asks for 64, but partition ")
    assert "would stay pending forever" in last
    assert _known_jobs() == before


def test_a_job_that_can_never_start_stops_the_waiting_launcher_and_status_says_why(slurm_cluster, tmp_path):
    from trd.dispatch import LauncherError, _wait
    from trd.status import _liveness

    # Submitted around trd's own check, as an older submission or another tool could have: 8 CPUs on a 2-CPU node.
    proc = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=8", "--wrap", "sleep 1"], capture_output=True,
                          text=True, env={**os.environ, **slurm_cluster.env}, check=True)
    job_id = proc.stdout.strip().split(";")[0]
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(slurm_cluster.conf)
    try:
        wait_until(lambda: job_info(job_id).get("Reason") == "PartitionConfig", 30, "the PartitionConfig reason")
        with pytest.raises(LauncherError, match=f"job {job_id} \\(stage s\\) can never start \\(PartitionConfig\\)"):
            _wait({"s": SimpleNamespace(job_id=job_id)}, "slurm", 0.2)
        status, note = _liveness(str(tmp_path), {"launcher": "slurm", "job_id": job_id}, "pending")
        assert status == "pending" and "PartitionConfig" in note and "can never start" in note
    finally:
        subprocess.run(["scancel", job_id], env={**os.environ, **slurm_cluster.env})
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
