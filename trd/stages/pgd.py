"""pgd: the white-box L-inf PGD attack (Madry et al.) on every released model's target test set, clean accuracy
`acc` and robust accuracy `rob` (at the attack's longest run; `rob_at` holds each listed step count, which are the
iterates of that one run). Batched on every rank, seeded per (seed, rank, batch), resumable batch by batch."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trd.attacks.pgd import PixelSpace, cross_entropy_objective, pgd_iterates
from trd.config import ConfigError, parse, plain
from trd.config.nodes import common_config
from trd.config.schema import at_least, each, knob, within
from trd.data.role_config import role_config
from trd.engine.loop import step_seed
from trd.engine.tally import tally
from trd.models.release import load_released
from trd.plan import StageKind


@dataclass
class PgdAttackConfig:
    eps: float = knob(8 / 255, within(0, 1))  # L-inf radius in [0, 1] pixels, whatever the input normalisation
    step: float = knob(2 / 255, within(0, 1, low_open=True))
    steps: list[int] = knob([20, 100], each(at_least(1)))  # robust accuracy after each (one run of the longest)
    random_start: bool = True
    batch_size: int = knob(256, at_least(1))
    save_every: int = knob(10, at_least(1))  # batches between the saved tallies a resumed job starts from
    seed: int = 0

    def check(self, where: str) -> None:
        if not self.steps or len(set(self.steps)) != len(self.steps):
            raise ConfigError(f"{where}.steps={self.steps} must list each step count once, e.g. [20, 100]")


def plan(cfg, plan) -> None:
    node = plain(parse(cfg.get("pgd"), PgdAttackConfig, "pgd"))
    released = plan.released_to_attack("pgd")
    config = {**common_config(cfg), "target": role_config(cfg, "target"), "pgd": node}
    for spec in released:
        plan.add(f"pgd/{spec.name}", "pgd", config, inputs={"model": spec.name}, model=spec.model,
                 attack={"attacks": spec.name, "attack": "pgd"})


def run(ctx) -> dict:
    c, node = ctx.config, ctx.config["pgd"]
    model = load_released(ctx.input("model"), device=ctx.device).eval().requires_grad_(False)
    space, steps = PixelSpace.of_role(c["target"]), sorted(node["steps"])
    names = ["samples", "clean"] + [f"rob{s}" for s in steps]

    def count(b, images, labels):
        with torch.no_grad():
            counts = {"samples": labels.numel(), "clean": (model(images).argmax(1) == labels).sum()}
        generator = torch.Generator().manual_seed(step_seed(node["seed"], ctx.env.rank, b))
        for t, adversarial in pgd_iterates(cross_entropy_objective(model, labels), images, space, eps=node["eps"],
                                           step=node["step"], steps=steps[-1], random_start=node["random_start"],
                                           generator=generator):
            if t in steps:
                with torch.no_grad():
                    counts[f"rob{t}"] = (model(adversarial).argmax(1) == labels).sum()
        return counts

    loader = ctx.test_loader(c["target"], int(node["batch_size"]))
    totals = tally(loader, count, names, stage_dir=ctx.dir, rank=ctx.env.rank, device=ctx.device,
                   save_every=int(node["save_every"]))
    n = totals["samples"]
    rob_at = {str(s): totals[f"rob{s}"] / n for s in steps}
    return {"acc": totals["clean"] / n, "rob": rob_at[str(steps[-1])], "rob_at": rob_at, "test_samples": n,
            "eps": node["eps"]}


KIND = StageKind("pgd", plan, run, reported=True, inputs=("model",), attack_labels=("attacks", "attack"),
                 schema=PgdAttackConfig)
