"""The disposal's target budget: what it releases, when it stops or lowers the learning rate, and that a resumed
job decides as an uninterrupted one."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trd.engine.target_budget import STATE_FILE, WITHIN_FILE, TargetBudget


def _engine(lr=0.1):
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return SimpleNamespace(module=module, optimizer=optimizer, lr_scheduler=scheduler)


def _run(budget, engine, accuracies, start=0):
    """Validate at steps start, start + 10, ... with the given accuracies, moving the weights in between; returns
    the weights seen at each step."""
    seen = {}
    for i, acc in enumerate(accuracies):
        step = start + 10 * i
        with torch.no_grad():
            engine.module.weight.fill_(float(step))
        seen[step] = engine.module.weight.clone()
        budget.observe(step, acc)
        if budget.stopped():
            break
    return seen


def test_stop_releases_the_latest_state_within_the_budget(tmp_path):
    engine = _engine()
    budget = TargetBudget(tmp_path, points=2.0, on_exceed="stop")
    budget.bind(engine)
    seen = _run(budget, engine, [0.90, 0.89, 0.885, 0.87, 0.95])
    assert budget.stopped() and budget.released_step == 20 and max(seen) == 30  # 0.95 at step 40 never ran
    budget.restore_within()
    assert torch.equal(engine.module.weight, seen[20])
    assert not (tmp_path / WITHIN_FILE).exists()
    summary = budget.summary()
    assert summary["released_step"] == 20 and summary["stopped_at"] == 30
    assert summary["reference_val_acc"] == pytest.approx(90.0)
    assert summary["val_acc"]["30"] == pytest.approx(87.0)


def test_lower_lr_halves_the_learning_rate_then_stops(tmp_path):
    engine = _engine(lr=0.1)
    budget = TargetBudget(tmp_path, points=1.0, on_exceed="lower_lr", lr_factor=0.5, max_lowerings=2)
    budget.bind(engine)
    _run(budget, engine, [0.90, 0.85, 0.90, 0.84])
    assert not budget.stopped() and budget.released_step == 20
    assert engine.lr_scheduler.base_lrs == [pytest.approx(0.025)]
    # The optimiser's current rate follows at once: base * the schedule's factor at its current step.
    assert engine.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    budget.observe(40, 0.5)
    assert budget.stopped() and budget.summary()["lr_lowerings"] == 2 and budget.released_step == 20


def test_a_resumed_job_keeps_the_history_its_checkpoint_covers(tmp_path):
    first = _engine(lr=0.1)
    budget = TargetBudget(tmp_path, points=1.0, on_exceed="lower_lr", max_lowerings=3)
    budget.bind(first)
    _run(budget, first, [0.90, 0.80, 0.80])  # lowered twice, at steps 10 and 20
    assert first.lr_scheduler.base_lrs == [pytest.approx(0.025)]
    # Preempted; the checkpoint is at step 15 and its scheduler state holds the rate lowered once.
    resumed = _engine(lr=0.1)
    again = TargetBudget(tmp_path, points=1.0, on_exceed="lower_lr", max_lowerings=3)
    again.bind(resumed)
    resumed.lr_scheduler.base_lrs = [0.05]
    again.resume(15)
    assert [h[0] for h in again.history] == [0, 10]
    assert resumed.lr_scheduler.base_lrs == [pytest.approx(0.05)]
    again.observe(20, 0.80)
    assert again.history == budget.history and resumed.lr_scheduler.base_lrs == [pytest.approx(0.025)]
    assert (tmp_path / STATE_FILE).exists()


def test_patience_waits_for_that_many_validations_in_a_row_outside(tmp_path):
    engine = _engine()
    budget = TargetBudget(tmp_path, points=2.0, on_exceed="stop", patience=2)
    budget.bind(engine)
    _run(budget, engine, [0.90, 0.85, 0.90, 0.85, 0.91, 0.80, 0.70, 0.99])
    assert budget.released_step == 40 and budget.summary()["stopped_at"] == 60


def test_only_the_main_rank_writes(tmp_path):
    engine = _engine()
    budget = TargetBudget(tmp_path, points=2.0, is_main=False)
    budget.bind(engine)
    budget.observe(0, 0.9)
    assert not (tmp_path / STATE_FILE).exists() and not (tmp_path / WITHIN_FILE).exists()
