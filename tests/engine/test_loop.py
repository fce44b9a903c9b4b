"""The training loop, its checkpoints and the in-job grid, run directly on a DeepSpeed engine in this process."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from trd.engine.checkpoint import CheckpointManager
from trd.engine.deepspeed_engine import build_engine
from trd.engine.grid import run_grid
from trd.engine.loop import train
from trd.engine.tensorboard import StageLogger
from trd.losses.finite import NonFiniteError

STEPS, BATCH = 5, 4


class Batches:
    """A loader with the interface the loop uses: a fixed order per (epoch, step), resumable mid-epoch."""
    steps_per_epoch = STEPS

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batch(self, step: int):
        g = torch.Generator().manual_seed(1000 * self.epoch + step)
        return torch.randn(BATCH, 6, generator=g), torch.randint(0, 3, (BATCH,), generator=g)

    def iter_from(self, start: int):
        return (self._batch(s) for s in range(start, STEPS))

    def __iter__(self):
        return self.iter_from(0)


def _engine(env, zero_stage: int = 0):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return build_engine(model, optimizer, None, {"zero_stage": zero_stage, "precision": "fp32"}, micro_batch=BATCH,
                        env=env)


def _ce(engine, x, y, step):
    return F.cross_entropy(engine(x), y), {}


class Stop(Exception):
    pass


def _run(tmp_path, env, step_fn=_ce, epochs=2, checkpoint_every=3):
    engine = _engine(env)
    progress = train(engine, Batches(), step_fn, epochs=epochs, ckpt=CheckpointManager(tmp_path, env),
                     log=StageLogger(tmp_path, env), env=env, seed=0, checkpoint_every=checkpoint_every)
    return engine, progress


def test_a_run_killed_after_a_mid_epoch_checkpoint_resumes_to_the_same_weights(tmp_path, process_group):
    env = process_group
    whole, progress = _run(tmp_path / "whole", env)
    assert progress == {"epoch": 2, "step": 0, "global_step": 2 * STEPS}

    def dies_after_step_7(engine, x, y, step):
        if step == 7:
            raise Stop
        return _ce(engine, x, y, step)

    with pytest.raises(Stop):
        _run(tmp_path / "killed", env, dies_after_step_7)
    pointer = json.loads((tmp_path / "killed" / "checkpoint" / "resume.json").read_text())
    assert pointer["progress"] == {"epoch": 1, "step": 1, "global_step": 6}  # the mid-epoch checkpoint at step 6
    resumed, progress = _run(tmp_path / "killed", env)
    assert progress["global_step"] == 2 * STEPS
    for a, b in zip(whole.module.parameters(), resumed.module.parameters()):
        assert torch.equal(a, b)  # dropout and data order replay exactly


def test_a_non_finite_loss_stops_the_loop(tmp_path, process_group):
    def nan(engine, x, y, step):
        loss, _ = _ce(engine, x, y, step)
        return loss * float("nan") if step == 2 else loss, {}

    with pytest.raises(NonFiniteError, match="non-finite loss"):
        _run(tmp_path, process_group, nan)


def test_the_grid_runs_each_point_once_and_resumes_by_point(tmp_path, process_group):
    ran = []

    def run_point(point, point_dir):
        ran.append(point["point"])
        (point_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
        if point["point"] == "b" and len(ran) == 2:
            raise Stop  # killed inside point b
        return {"acc": point["lr"] * 10}

    points = [{"point": "a", "lr": 0.1}, {"point": "b", "lr": 0.2}]
    with pytest.raises(Stop):
        run_grid(tmp_path, process_group, points, run_point)
    assert (tmp_path / "a" / "result.json").exists() and not (tmp_path / "a" / "checkpoint").exists()
    results = run_grid(tmp_path, process_group, points, run_point)
    assert ran == ["a", "b", "b"]  # a is not run again
    assert results == [{"point": "a", "lr": 0.1, "acc": 1.0}, {"point": "b", "lr": 0.2, "acc": 2.0}]
    with pytest.raises(ValueError, match="distinct names"):
        run_grid(tmp_path, process_group, [points[0], points[0]], run_point)


def test_a_step_budget_ends_mid_epoch_evaluates_where_asked_and_resumes_past_its_end(tmp_path, process_group):
    env = process_group
    seen = []
    engine = _engine(env)
    kwargs = dict(max_steps=7, ckpt=CheckpointManager(tmp_path, env), log=StageLogger(tmp_path, env), env=env, seed=0,
                  evaluate_at={3, 7}, on_evaluate=lambda step: seen.append(step) or {})
    progress = train(engine, Batches(), _ce, **kwargs)
    assert progress == {"epoch": 1, "step": 2, "global_step": 7} and seen == [3, 7]
    before = [p.detach().clone() for p in engine.module.parameters()]
    again = _engine(env)
    assert train(again, Batches(), _ce, **kwargs)["global_step"] == 7  # a requeued finished run does nothing
    assert seen == [3, 7]
    assert all(torch.equal(a, b) for a, b in zip(before, again.module.parameters()))
    with pytest.raises(ValueError, match="epochs or max_steps"):
        train(engine, Batches(), _ce, epochs=1, **kwargs)


def test_a_run_of_no_optimiser_step_is_an_error_not_a_trained_model(tmp_path, process_group):
    with pytest.raises(ValueError, match="ran no optimiser step"):
        _run(tmp_path, process_group, epochs=0)
