"""unsir: a model trained on the beneficial and the malicious classes together (the malicious ones after the
beneficial ones in its head), which then unlearns the malicious classes with UNSIR (trd.losses.unsir): noise
per class, impair, repair. Released with the beneficial rows of its head only."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trd.config import parse, plain
from trd.config.nodes import TrainConfig, common_config, model_config
from trd.config.schema import at_least, knob, positive, within
from trd.data.role_config import beneficial_and_malicious
from trd.engine.checkpoint import CheckpointManager
from trd.engine.cycle import SideStream
from trd.engine.evaluation import accuracy
from trd.engine.loop import train
from trd.losses.unsir import error_maximising_noise, noise_batch
from trd.models.registry import build_from_config
from trd.plan import StageKind


@dataclass
class NoiseConfig:
    count: int = knob(32, at_least(1))  # noise images per malicious class
    steps: int = knob(50, at_least(1))
    lr: float = knob(0.1, positive())
    reg: float = knob(0.1, at_least(0))  # weight of the noise's RMS, subtracted from the loss it maximises


@dataclass
class UnsirConfig(TrainConfig):  # epochs, batch_size, optim: the model trained on both class groups
    malicious_batch_size: int = knob(64, at_least(1))
    retain_fraction: float = knob(0.3, within(0, 1, low_open=True))  # the retained sample impair and repair see
    noise: NoiseConfig = knob(factory=NoiseConfig)
    noise_batch_size: int = knob(32, at_least(1))  # noise images beside each retained batch while impairing
    impair: TrainConfig = knob(kw_only=True)
    repair: TrainConfig = knob(kw_only=True)


def plan(cfg, plan) -> None:
    unsir = parse(cfg["unsir"], UnsirConfig, "unsir")
    source, malicious = beneficial_and_malicious(cfg)
    model, _ = model_config(cfg, source["image_size"])
    plan.add("unsir", "unsir", {**common_config(cfg), "model": model, "source": source, "malicious": malicious,
                                "train": plain(unsir)}, model={"method": "unsir"})


def _phase(ctx, engine, loader, step, cfg: dict, ckpt, name: str) -> None:
    train(engine, loader, step, epochs=int(cfg["epochs"]), ckpt=ckpt, log=ctx.log, env=ctx.env, seed=ctx.config["seed"],
          checkpoint_every=int(cfg.get("checkpoint_every", 0)), desc=f"{ctx.name} {name}")


def _retained_phase(ctx, model, retained: dict, step, phase_cfg: dict, name: str) -> None:
    loader = ctx.train_loader(retained, phase_cfg["batch_size"])
    engine = ctx.engine(model, phase_cfg, loader.steps_per_epoch)
    _phase(ctx, engine, loader, step, phase_cfg, CheckpointManager(ctx.dir / name, ctx.env), name)


def run(ctx) -> dict:
    c, cfg = ctx.config, ctx.config["train"]
    torch.manual_seed(c["seed"])
    good_classes, bad_classes = int(c["source"]["num_classes"]), int(c["malicious"]["num_classes"])
    model = build_from_config(c["model"], good_classes + bad_classes, int(c["source"]["image_size"])).to(ctx.device)
    good_test, bad_test = ctx.test_loader(c["source"]), ctx.test_loader(c["malicious"])
    # The malicious classes follow the beneficial ones in the head: rolling the logits by good_classes scores
    # malicious test labels 0..bad_classes-1 against their own columns.
    forgotten = lambda m, x: torch.roll(m(x), -good_classes, dims=1)  # noqa: E731

    def measure() -> dict:
        return {"retained": accuracy(model, good_test, ctx.device),
                "forgotten": accuracy(model, bad_test, ctx.device, forward=forgotten)}

    # 1. the model that knows both class groups
    loader = ctx.train_loader(c["source"], cfg["batch_size"])
    bad = SideStream(ctx.train_loader(c["malicious"], cfg["malicious_batch_size"]))

    def both(engine, images, labels, global_step):
        bad_images, bad_labels = bad.next(global_step, ctx.device)
        logits = engine(torch.cat([images, bad_images]))
        return F.cross_entropy(logits, torch.cat([labels, bad_labels + good_classes])), {}

    engine = ctx.engine(model, cfg, loader.steps_per_epoch)
    _phase(ctx, engine, loader, both, cfg, ctx.ckpt, "train")
    before = measure()

    # 2. error-maximising noise, one set per malicious class against its own label (seeded: a resumed job
    # learns the same noise again)
    generator = torch.Generator().manual_seed(c["seed"])
    size = int(c["source"]["image_size"])
    n = cfg["noise"]
    noise = error_maximising_noise(model, range(good_classes, good_classes + bad_classes), (3, size, size),
                                   count=int(n["count"]), steps=int(n["steps"]), lr=float(n["lr"]),
                                   reg=float(n["reg"]), generator=generator, device=ctx.device)

    # 3. impair: the retained sample beside noise labelled with its class; 4. repair: the retained sample alone
    retained = {**c["source"], "fraction": cfg["retain_fraction"]}
    draws = torch.Generator()  # reseeded every step: a resumed job draws the same noise batches

    def impair(engine, images, labels, global_step):
        draws.manual_seed(c["seed"] * 100_003 + global_step)
        x, y = noise_batch(noise, int(cfg["noise_batch_size"]), draws)
        return F.cross_entropy(engine(torch.cat([images, x])), torch.cat([labels, y])), {}

    def repair(engine, images, labels, global_step):
        return F.cross_entropy(engine(images), labels), {}

    _retained_phase(ctx, model, retained, impair, cfg["impair"], "impair")
    impaired = measure()
    _retained_phase(ctx, model, retained, repair, cfg["repair"], "repair")
    after = measure()

    released = build_from_config(c["model"], good_classes, size)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    state["head.weight"], state["head.bias"] = model.head.weight[:good_classes], model.head.bias[:good_classes]
    released.load_state_dict(state)
    ctx.save_released(released)
    for name in ("impair", "repair"):
        CheckpointManager(ctx.dir / name, ctx.env).remove()
    ctx.ckpt.remove()
    return {"acc": {"source": accuracy(released.to(ctx.device), good_test, ctx.device)},
            "unsir": {"before": before, "impaired": impaired, "after": after}}


KIND = StageKind("unsir", plan, run, releases_models=True, schema=UnsirConfig)
