"""evaluate: accuracy of a released model on every dataset role it has a head for."""
from __future__ import annotations

from trd.engine.evaluation import accuracy
from trd.models.io import load_model
from trd.plan import planner
from trd.stages.base import stage
from trd.stages.common import build_test_loader, common_config, load_source_head, released_model_path, role_config


@planner("evaluate")
def plan_evaluate(cfg, plan) -> None:
    roles = {"source": role_config(cfg, "source"), "target": role_config(cfg, "target")}
    for released in plan.released():
        plan.add(f"evaluate/{released.name}", "evaluate", {**common_config(cfg), "roles": roles},
                 inputs={"model": released.name}, labels={**released.labels, "evaluates": released.name})


@stage("evaluate")
def run_evaluate(ctx) -> dict:
    roles = ctx.config["roles"]
    model = load_model(released_model_path(ctx.input("model"))).to(ctx.device)
    acc = {"target": accuracy(model, build_test_loader(ctx, roles["target"]), ctx.device)}
    source_head = load_source_head(ctx.input("model"), model.feature_dim, int(roles["source"]["num_classes"]))
    if source_head is not None:
        source_head = source_head.to(ctx.device)
        acc["source"] = accuracy(model, build_test_loader(ctx, roles["source"]), ctx.device,
                                 forward=lambda m, x: source_head(m.features(x)))
    return {"acc": acc}
