"""agnostic: the target-agnostic attack (Rezaei & Liu, ICLR 2020; trd.attacks.agnostic) on every released model,
crafted on the one public model the attacker holds (the model of stage agnostic.public) and never on the model
it attacks: `clean` accuracy on the target test set and `asr`, the share of the clean-correct samples that the
perturbed images turn wrong. Batched on every rank, resumable batch by batch."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trd.attacks.agnostic import attack_success, feature_target_objective
from trd.attacks.pgd import PixelSpace, pgd_linf
from trd.config import ConfigError, parse, plain
from trd.config.nodes import common_config, model_config
from trd.config.schema import at_least, knob, positive
from trd.data.role_config import role_config
from trd.engine.loop import step_seed
from trd.engine.tally import tally
from trd.models.base import FEATURES_TAP
from trd.models.registry import build_from_config
from trd.models.release import load_released
from trd.plan import StageKind


@dataclass
class AgnosticConfig:
    public: str = "pretrain"  # the stage whose model is public: the attacker crafts its images on it
    layer: str = FEATURES_TAP  # the public model's layer pushed to the target: features (penultimate) or a block
    neuron: int = knob(0, at_least(0))  # the entry of the (flattened) layer driven to magnitude
    magnitude: float = knob(1000.0, positive())
    eps: float = knob(0.4, positive())  # L-inf radius in the target's normalised input units (Renofeation's)
    step: float = knob(0.01, positive())
    steps: int = knob(40, at_least(1))
    random_start: bool = False
    batch_size: int = knob(256, at_least(1))
    save_every: int = knob(10, at_least(1))
    seed: int = 0


def plan(cfg, plan) -> None:
    node = parse(cfg.get("agnostic"), AgnosticConfig, "agnostic")
    released = plan.released_to_attack("agnostic")
    if node.public not in plan:
        raise ConfigError(f"agnostic.public={node.public!r} is not a stage of this plan: the attack needs the public "
                          f"pretrained model; add {node.public} to stages or name the stage that trains it")
    roles = {"source": role_config(cfg, "source"), "target": role_config(cfg, "target")}
    model, _ = model_config(cfg, roles["source"]["image_size"])
    public = build_from_config(model, int(roles["source"]["num_classes"]), int(roles["source"]["image_size"]))
    layers = [*public.block_names, FEATURES_TAP]
    if node.layer not in layers:
        raise ConfigError(f"agnostic.layer={node.layer!r} is not a layer of {model['name']}: use one of "
                          f"{', '.join(layers)}")
    if node.layer == FEATURES_TAP and node.neuron >= public.feature_dim:
        raise ConfigError(f"agnostic.neuron={node.neuron} is out of range: {model['name']} has {public.feature_dim} "
                          f"features, so use a neuron in [0, {public.feature_dim - 1}]")
    config = {**common_config(cfg), **roles, "agnostic": plain(node)}
    for spec in released:
        if spec.name == node.public:
            continue
        plan.add(f"agnostic/{spec.name}", "agnostic", config, inputs={"model": spec.name, "public": node.public},
                 model=spec.model, attack={"attacks": spec.name, "attack": "agnostic"})


def run(ctx) -> dict:
    c, node = ctx.config, ctx.config["agnostic"]
    model = load_released(ctx.input("model"), device=ctx.device).eval().requires_grad_(False)
    public = load_released(ctx.input("public"), device=ctx.device).eval().requires_grad_(False)
    target, source = PixelSpace.of_role(c["target"]), PixelSpace.of_role(c["source"])

    def public_layer(images):  # the public model sees images normalised as its own training data was
        _, taps = public.forward_with_taps(source.to_model(target.to_pixels(images)), [node["layer"]])
        return taps[node["layer"]]

    objective = feature_target_objective(public_layer, float(node["magnitude"]), int(node["neuron"]))

    def count(b, images, labels):
        generator = torch.Generator().manual_seed(step_seed(node["seed"], ctx.env.rank, b))
        adversarial = pgd_linf(objective, images, target, eps=node["eps"], step=node["step"], steps=node["steps"],
                               random_start=node["random_start"], normalised_budget=True, generator=generator)
        with torch.no_grad():
            clean_correct = model(images).argmax(1) == labels
            adversarial_correct = model(adversarial).argmax(1) == labels
        succeeded, counted = attack_success(clean_correct, adversarial_correct)
        return {"samples": labels.numel(), "clean": counted, "succeeded": succeeded}

    loader = ctx.test_loader(c["target"], int(node["batch_size"]))
    totals = tally(loader, count, ["samples", "clean", "succeeded"], stage_dir=ctx.dir, rank=ctx.env.rank,
                   device=ctx.device, save_every=int(node["save_every"]))
    return {"clean": totals["clean"] / totals["samples"],
            "asr": totals["succeeded"] / totals["clean"] if totals["clean"] else None,
            "test_samples": totals["samples"], "attacked": totals["clean"]}


KIND = StageKind("agnostic", plan, run, reported=True, inputs=("model", "public"), attack_labels=("attacks", "attack"),
                 schema=AgnosticConfig)
