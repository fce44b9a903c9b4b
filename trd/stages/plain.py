"""plain: cross-entropy on the beneficial task (data.source) alone, released as it is: the reference of the
transfer-resistant setting (report.reference: plain) and the teacher that SKD distils."""
from __future__ import annotations

from trd.config import parse, plain
from trd.config.nodes import TrainConfig, common_config, model_config
from trd.data.role_config import role_config
from trd.engine.supervised import train_from_scratch
from trd.plan import StageKind


def plan(cfg, plan) -> None:
    source = role_config(cfg, "source")
    model, _ = model_config(cfg, source["image_size"])
    plan.add("plain", "plain", {
        **common_config(cfg), "model": model, "source": source,
        "train": plain(parse(cfg["plain"], TrainConfig, "plain")),
    }, model={"method": "plain"})


def run(ctx) -> dict:
    return train_from_scratch(ctx, "source")


KIND = StageKind("plain", plan, run, releases_models=True, schema=TrainConfig)
