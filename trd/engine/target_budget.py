"""The target-accuracy budget of a disposal: the owner accepts losing at most `points` of accuracy on a held-out
validation slice of the target's train split, against the model the disposal started from. The stage validates
every few steps; the latest state within the budget is kept on disk and is what gets released. `patience`
validations in a row outside it stop the run, or first lower the learning rate a few times (on_exceed=lower_lr):
on a slice of a few dozen images one image is two points, so a single validation is a noisy verdict.

Everything the budget decides is a function of its validation history, which is saved beside the checkpoints: a
job resumed from step s keeps the history up to s and replays the rest, so it decides what an uninterrupted job
would have."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file, save_file

from trd.atomic import atomic_write, atomic_write_json, read_json
from trd.engine.distributed import barrier

ON_EXCEED = ("stop", "lower_lr")
STATE_FILE = "target_budget.json"
WITHIN_FILE = "within_budget.safetensors"


class TargetBudget:
    def __init__(self, stage_dir: str | Path, points: float, on_exceed: str = "stop", lr_factor: float = 0.5,
                 max_lowerings: int = 2, patience: int = 1, is_main: bool = True):
        if on_exceed not in ON_EXCEED:
            raise ValueError(f"on_exceed={on_exceed!r}: use one of {', '.join(ON_EXCEED)}")
        self.dir, self.points, self.on_exceed = Path(stage_dir), float(points), on_exceed
        self.lr_factor, self.max_lowerings, self.is_main = float(lr_factor), int(max_lowerings), is_main
        self.patience = int(patience)
        self.history: list[list[float]] = [list(h) for h in read_json(self.dir / STATE_FILE, {}).get("history", [])]
        self.engine = None
        self.measure: Callable[[], float] | None = None
        self._initial_lrs: list[float] | None = None

    @property
    def reference(self) -> float | None:
        """The validation accuracy of the model the disposal started from (step 0)."""
        return self.history[0][1] if self.history else None

    def _decisions(self) -> tuple[int | None, int, int | None]:
        """(latest step within the budget, learning-rate lowerings so far, step the run stopped at)."""
        within, lowerings, streak = None, 0, 0
        for step, acc in self.history:
            if acc >= self.reference - self.points / 100 - 1e-9:  # accuracies are fractions, points are %
                within, streak = int(step), 0
                continue
            streak += 1
            if streak < self.patience:
                continue
            if self.on_exceed == "stop" or lowerings == self.max_lowerings:
                return within, lowerings, int(step)
            lowerings, streak = lowerings + 1, 0
        return within, lowerings, None

    @property
    def released_step(self) -> int | None:
        return self._decisions()[0]

    def stopped(self) -> bool:
        return self._decisions()[2] is not None

    def bind(self, engine, measure: Callable[[], float] | None = None) -> None:
        """The engine to steer and measure() its accuracy on the validation slice (a fraction); the engine's
        learning rates are noted before a checkpoint (which may hold lowered ones) is loaded."""
        self.engine, self.measure = engine, measure
        self._initial_lrs = list(engine.lr_scheduler.base_lrs)

    def validate(self, step: int) -> dict:
        """Measure the model at `step` and observe the result (train()'s on_evaluate)."""
        return self.observe(step, self.measure())

    def resume(self, global_step: int) -> None:
        """At the start of train(): forget validations the checkpoint does not cover and set the learning rate the
        kept ones call for."""
        self.history = [h for h in self.history if h[0] <= global_step]
        self._apply_lr()

    def observe(self, step: int, accuracy: float) -> dict:
        """Record a validation; keep the model on disk when it is within the budget. Returns scalars to log."""
        self.history = [h for h in self.history if h[0] < step] + [[int(step), float(accuracy)]]
        within = self.released_step == step
        if within and self.is_main:
            state = {k: v.detach().cpu().contiguous() for k, v in self.engine.module.state_dict().items()}
            atomic_write(self.dir / WITHIN_FILE, lambda tmp: save_file(state, tmp))
        if self.is_main:
            atomic_write_json(self.dir / STATE_FILE, {"history": self.history})
        self._apply_lr()
        return {"target_val_acc": 100 * accuracy, "within_budget": float(within)}

    def _apply_lr(self) -> None:
        if self.engine is None:
            raise RuntimeError("TargetBudget.bind(engine) must run before training")
        scheduler = self.engine.lr_scheduler
        factor = self.lr_factor ** self._decisions()[1]
        scheduler.base_lrs = [lr * factor for lr in self._initial_lrs]
        for group, base, rule in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * rule(scheduler.last_epoch)

    def restore_within(self) -> None:
        """Load the latest state within the budget into the engine's module (every rank), then drop the file."""
        module = self.engine.module
        barrier()
        module.load_state_dict(load_file(str(self.dir / WITHIN_FILE), device=str(next(module.parameters()).device)))
        barrier()
        if self.is_main:
            (self.dir / WITHIN_FILE).unlink(missing_ok=True)

    def summary(self) -> dict:
        within, lowerings, stopped = self._decisions()
        return {"points": self.points, "reference_val_acc": 100 * self.reference if self.history else None,
                "val_acc": {str(int(s)): 100 * a for s, a in self.history}, "released_step": within,
                "stopped_at": stopped, "lr_lowerings": lowerings, "on_exceed": self.on_exceed,
                "patience": self.patience}
