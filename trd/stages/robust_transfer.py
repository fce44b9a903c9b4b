"""robust_transfer: CARTL's transfer of every model of the listed source stages onto the target, by each method:

* tl: the last k blocks fine-tuned, the first L - k frozen bit for bit (CARTL's vanilla transfer);
* neft: the same with Non-Expansive Fine-Tuning (trd.models.neft: the trained layers' spectral norm held at beta);
* lwf: end-to-end fine-tuning with the source model's penultimate features distilled (Shafahi et al.).

BatchNorm of the trained part follows robust_transfer.bn_stats and bn_affine (trd.models.last_k) under tl and
neft. Released models are labelled with the method and the source they came from."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trd.config import ConfigError, parse, plain
from trd.config.nodes import TrainConfig, check_trainable, common_config, model_config
from trd.config.schema import at_least, each, knob, one_of, positive
from trd.data.role_config import check_same_image_size, role_config
from trd.engine.supervised import train_supervised
from trd.losses.feature_distillation import feature_distillation
from trd.models.last_k import BN_AFFINE, BN_STATS, freeze_for_last_k, train_mode
from trd.models.neft import apply_neft, remove_neft
from trd.models.release import load_released
from trd.plan import StageKind

METHODS = ("tl", "neft", "lwf")


@dataclass
class RobustTransferConfig(TrainConfig):
    sources: list[str] = knob(["pretrain", "robust_pretrain"])  # stage kinds whose every model is transferred
    methods: list[str] = knob(["tl", "neft"], each(one_of(*METHODS)))
    k: int = knob(1, at_least(1))  # blocks trained by tl and neft (plus the neck and the head)
    beta: float = knob(1.0, positive())  # neft: the spectral norm each trained layer is held at
    power_iterations: int = knob(1, at_least(1))  # neft: power iterations per training forward
    bn_stats: str = knob("update", one_of(*BN_STATS))  # the trained part's running statistics: update | reuse
    bn_affine: str = knob("train", one_of(*BN_AFFINE))  # the trained part's BatchNorm scale and shift
    lwf_weight: float = knob(1.0, positive())  # lwf: weight of the feature distillation term

    def check(self, where: str) -> None:
        for key in ("sources", "methods"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                raise ConfigError(f"{where}.{key}={values} must list each entry once")


def _source_label(spec) -> dict:
    labels = dict(spec.model)
    method = labels.pop("method", spec.kind)
    return {"source": "natural" if method == "pretrain" else method, **labels}


def plan(cfg, plan) -> None:
    node = parse(cfg["robust_transfer"], RobustTransferConfig, "robust_transfer")
    roles = {"source": role_config(cfg, "source"), "target": role_config(cfg, "target")}
    check_same_image_size(roles)
    model, blocks = model_config(cfg, roles["target"]["image_size"])
    check_trainable("last_k", node.k, "robust_transfer", blocks)
    train = plain(node)
    options = {key: train.pop(key) for key in ("k", "beta", "power_iterations", "bn_stats", "bn_affine",
                                               "lwf_weight")}
    sources, methods = train.pop("sources"), train.pop("methods")
    for kind in sources:
        specs = plan.of_kind(kind)
        if not specs:
            raise ConfigError(f"robust_transfer.sources names {kind!r}, which has no stage in this plan: add {kind} "
                              f"before robust_transfer in stages, or drop it from robust_transfer.sources")
        for spec in specs:
            for method in methods:
                plan.add(f"robust_transfer/{spec.name.replace('/', '_')}/{method}", "robust_transfer",
                         {**common_config(cfg), "model": model, "target": roles["target"], "train": train,
                          "method": method, **options},
                         inputs={"pretrained": spec.name}, model={"method": method, **_source_label(spec)})


def run(ctx) -> dict:
    c = ctx.config
    torch.manual_seed(c["seed"])
    model = load_released(ctx.input("pretrained"),
                          expected={"name": c["model"]["name"], "image_size": c["target"]["image_size"]})
    source_head = copy.deepcopy(model.head)
    teacher = copy.deepcopy(model).eval().requires_grad_(False).to(ctx.device) if c["method"] == "lwf" else None
    model.replace_head(int(c["target"]["num_classes"]))
    k, method = int(c["k"]), c["method"]
    neft_layers = []
    if method == "lwf":
        model.set_trainable("full")
    else:
        freeze_for_last_k(model, k, c["bn_affine"])
        if method == "neft":
            neft_layers = apply_neft(model, k, float(c["beta"]), int(c["power_iterations"]))

    def step(engine, images, labels, global_step):
        module = engine.module
        if teacher is None:
            train_mode(module, k, c["bn_stats"])
            return F.cross_entropy(module(images), labels), {}
        features = module.features(images)
        ce = F.cross_entropy(module.head(features), labels)
        distillation = feature_distillation(features, teacher.features(images))
        return ce + float(c["lwf_weight"]) * distillation, {"ce": float(ce.detach()),
                                                              "distillation": float(distillation.detach())}

    model, metrics = train_supervised(ctx, model, c["target"], c["train"], "target", step=step)
    remove_neft(model)
    model.set_trainable("full")
    ctx.save_released(model, source_head=source_head)
    ctx.ckpt.remove()
    return {**metrics, "neft_layers": neft_layers}


KIND = StageKind("robust_transfer", plan, run, releases_models=True, inputs=("pretrained",),
                 schema=RobustTransferConfig)
