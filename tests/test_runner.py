"""The stage runner's bookkeeping, on stage kinds of a test's own: metrics.json at every outcome, provenance,
labels, no rerun of a finished stage, and a refusal to run a stage planned for another version of its kind."""
from __future__ import annotations

import json

import pytest

from trd import contract, runner
from trd.losses.finite import NonFiniteError
from trd.plan import Plan, StageKind


def _plan_one(tmp_path, run, version=1):
    kind = StageKind("toy", lambda cfg, plan: None, run, version=version)
    plan = Plan(tmp_path / "out", {"toy": kind})
    spec = plan.add("toy", "toy", {"seed": 0, "x": 1}, model={"method": "toy"})
    plan.write(tmp_path / "out" / "exp")
    return spec.dir, kind


@pytest.fixture
def use_kind(monkeypatch):
    def use(kind):
        monkeypatch.setattr(runner, "get_kind", lambda name: kind)
    return use


def _metrics(stage_dir):
    return json.loads((stage_dir / "metrics.json").read_text())


def test_a_finished_stage_records_its_result_labels_and_code_and_is_not_run_again(tmp_path, use_kind):
    calls = []

    def run(ctx):
        calls.append(ctx.config["x"])
        return {"acc": {"target": 0.5}}

    stage, kind = _plan_one(tmp_path, run)
    use_kind(kind)
    result = runner.run_stage(stage)
    metrics = _metrics(stage)
    assert metrics == result and metrics["status"] == "done" and metrics["acc"] == {"target": 0.5}
    assert metrics["model_labels"] == {"method": "toy"} and metrics["attack_labels"] == {}
    assert metrics["code"]["trd"] and "git_commit" in metrics["code"]  # this checkout's commit
    assert metrics["timings"]["stage_seconds"] >= 0
    assert set(metrics) - {"acc"} <= contract.RUNNER_KEYS  # what a reused attack leaves out (trd.attacks.reuse)
    runner.run_stage(stage)
    assert calls == [1]


@pytest.mark.parametrize("error, status", [(ValueError("bad shard"), "failed"),
                                           (NonFiniteError("non-finite loss"), "diverged")])
def test_an_exception_is_recorded_as_failed_or_diverged(tmp_path, use_kind, error, status):
    def run(ctx):
        raise error

    stage, kind = _plan_one(tmp_path, run)
    use_kind(kind)
    with pytest.raises(type(error)):
        runner.run_stage(stage)
    metrics = _metrics(stage)
    assert metrics["status"] == status and str(error) in metrics["error"] and "Traceback" in metrics["traceback"]


def test_a_stage_planned_for_another_version_of_its_kind_must_be_replanned(tmp_path, use_kind):
    stage, _ = _plan_one(tmp_path, lambda ctx: {})
    use_kind(StageKind("toy", lambda cfg, plan: None, lambda ctx: {}, version=2))
    with pytest.raises(RuntimeError, match="planned for version 1 of stage kind toy, this code has version 2: "
                                           "submit the experiment again"):
        runner.run_stage(stage)
    assert not (stage / "metrics.json").exists()


def test_a_directory_without_stage_json_says_to_plan_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="plan the experiment with launch/submit.py first"):
        runner.run_stage(tmp_path)


def test_the_submitit_job_unpickles_without_importing_torch(tmp_path):
    # submitit installs its USR2 handler after unpickling the job: torch there would leave seconds in which a
    # time-limit signal kills the job instead of requeueing it.
    import pickle
    import subprocess
    import sys

    from trd.job import StageJob

    blob = tmp_path / "job.pkl"
    blob.write_bytes(pickle.dumps(StageJob(tmp_path)))
    probe = f"import pickle, sys; pickle.loads(open({str(blob)!r}, 'rb').read()); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
