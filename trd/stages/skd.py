"""skd: selective knowledge distillation (trd.losses.skd) of the plain model into a student that serves the
beneficial task and maps malicious images to zero features, then a new head trained on the beneficial task."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from trd.config import ConfigError, parse, plain
from trd.config.nodes import TrainConfig, common_config, model_config
from trd.config.schema import at_least, knob, positive, within
from trd.data.role_config import beneficial_and_malicious
from trd.engine.cycle import SideStream
from trd.engine.evaluation import accuracy
from trd.engine.loop import train
from trd.engine.supervised import train_new_head
from trd.losses.skd import has_relu, misses, skd_loss
from trd.models.registry import build_from_config
from trd.models.release import load_released
from trd.plan import StageKind


@dataclass
class SkdConfig(TrainConfig):
    constant: float = knob(-100.0, within(-1e6, 0, high_open=True))  # the last ReLU's input on malicious images
    malicious_weight: float = knob(1.0, positive())
    malicious_batch_size: int = knob(64, at_least(1))
    head: TrainConfig = knob(kw_only=True)  # the new head, trained on the beneficial task on the frozen student


def plan(cfg, plan) -> None:
    if "plain" not in plan:
        raise ConfigError("stage skd distils the plain model: add plain before skd in stages")
    skd = parse(cfg["skd"], SkdConfig, "skd")
    source, malicious = beneficial_and_malicious(cfg)
    model, _ = model_config(cfg, source["image_size"])
    if not has_relu(build_from_config(model, int(source["num_classes"]), int(source["image_size"]))):
        raise ConfigError(f"skd needs a model whose features follow a ReLU (cnn, resnet18, wrn28_4...): "
                          f"model={model['name']} has none; leave skd out of stages for it")
    teacher = plan["plain"]
    if teacher.config["model"] != model or teacher.config["source"] != source:
        raise ConfigError("skd's student must be the plain teacher's architecture on its data: give plain and skd "
                          "the same model and data.source")
    plan.add("skd", "skd", {**common_config(cfg), "model": model, "source": source, "malicious": malicious,
                            "train": plain(skd)}, inputs={"teacher": "plain"}, model={"method": "skd"})


def run(ctx) -> dict:
    c, cfg = ctx.config, ctx.config["train"]
    torch.manual_seed(c["seed"])
    teacher = load_released(ctx.input("teacher"), device=ctx.device,
                            expected={"name": c["model"]["name"], "image_size": c["source"]["image_size"]})
    teacher.eval().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    good_loader = ctx.train_loader(c["source"], cfg["batch_size"])
    bad = SideStream(ctx.train_loader(c["malicious"], cfg["malicious_batch_size"]))
    bad_test = ctx.test_loader(c["malicious"])
    engine = ctx.engine(student, cfg, good_loader.steps_per_epoch)

    def step(engine, images, labels, global_step):
        bad_images, _ = bad.next(global_step, ctx.device)
        with torch.no_grad():
            target = teacher.features(images)
        return skd_loss(engine.module, target, images, bad_images, float(cfg["constant"]), float(cfg["malicious_weight"]))

    train(engine, good_loader, step, epochs=int(cfg["epochs"]), ckpt=ctx.ckpt, log=ctx.log, env=ctx.env,
          seed=c["seed"], checkpoint_every=int(cfg.get("checkpoint_every", 0)),
          on_epoch_end=lambda epoch: {"skd/misses": misses(engine.module, bad_test, ctx.device)}, desc=ctx.name)
    model, acc = train_new_head(ctx, engine.module, c["source"], cfg["head"], "head")
    result = {"acc": {"source": acc}, "teacher_acc": {"source": accuracy(teacher, ctx.test_loader(c["source"]), ctx.device)},
              "misses": misses(model, bad_test, ctx.device), "misses_teacher": misses(teacher, bad_test, ctx.device)}
    ctx.save_released(model)
    ctx.ckpt.remove()
    return result


KIND = StageKind("skd", plan, run, releases_models=True, inputs=("teacher",), schema=SkdConfig)
