"""evaluate: accuracy of every released model on every dataset role it has a head for."""
from __future__ import annotations

from trd.config.nodes import common_config
from trd.data.role_config import role_config
from trd.engine.evaluation import accuracy
from trd.models.release import load_released, load_source_head
from trd.plan import StageKind


def plan(cfg, plan) -> None:
    roles = {"source": role_config(cfg, "source"), "target": role_config(cfg, "target")}
    for released in plan.released():
        plan.add(f"evaluate/{released.name}", "evaluate", {**common_config(cfg), "roles": roles},
                 inputs={"model": released.name}, model=released.model, attack={"evaluates": released.name})


def run(ctx) -> dict:
    roles = ctx.config["roles"]
    model = load_released(ctx.input("model"), device=ctx.device)
    target = ctx.test_loader(roles["target"])
    acc, samples = {"target": accuracy(model, target, ctx.device)}, {"target": target.num_samples}
    source_head = load_source_head(ctx.input("model"), model.feature_dim, int(roles["source"]["num_classes"]))
    if source_head is not None:
        source_head = source_head.to(ctx.device)
        source = ctx.test_loader(roles["source"])
        acc["source"] = accuracy(model, source, ctx.device, forward=lambda m, x: source_head(m.features(x)))
        samples["source"] = source.num_samples
    return {"acc": acc, "test_samples": samples}


KIND = StageKind("evaluate", plan, run, reported=True, inputs=("model",), attack_labels=("evaluates",))
