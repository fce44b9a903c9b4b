"""mia: membership inference on the source training data, through each released model's private source head.

Members are source training samples (the split the model was pretrained on, its `fraction` included),
non-members source test samples; at most mia.max_samples of each, drawn at random with mia.seed, then
balanced by trd.attacks.run_all. A model without a source head (TGT, trained from scratch on the target)
has seen no source data and has no source output to attack: its stage says so (`skipped`) instead of
attacking the target head, whose outputs on source images mean nothing to a membership test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trd.config import parse, plain
from trd.config.nodes import data_options, model_config
from trd.config.schema import at_least, knob
from trd.data import build_loader, ensure_role_shards
from trd.data.role_config import role_config
from trd.models.release import load_released, load_source_head
from trd.plan import StageKind


@dataclass
class MiaConfig:
    max_samples: int = knob(1000, at_least(2))  # members and non-members each (the SVC attack is O(n^2))
    batch_size: int = knob(256, at_least(1))
    grad_norms: bool = False  # also the white-box gradient-norm attack (per-sample gradients: slower)
    seed: int = 0


def plan(cfg, plan) -> None:
    mia = plain(parse(cfg.get("mia"), MiaConfig, "mia"))
    released = plan.released_to_attack("mia")
    source = role_config(cfg, "source")
    config = {"source": source, "model": model_config(cfg, source["image_size"])[0], "mia": mia,
              "data_options": data_options(cfg)}
    for spec in released:
        plan.add(f"mia/{spec.name}", "mia", config, inputs={"model": spec.name}, model=spec.model,
                 attack={"attacks": spec.name})


def sample_batches(loader, chosen: np.ndarray):
    """The loader's batches restricted to the samples at positions `chosen` of its (fixed) evaluation order."""
    keep = np.zeros(loader.num_samples, dtype=bool)
    keep[chosen] = True
    seen = 0
    for images, labels in loader:
        mask = torch.from_numpy(keep[seen:seen + len(labels)])
        seen += len(labels)
        if mask.any():
            yield images[mask], labels[mask]
    if seen != loader.num_samples:
        raise RuntimeError(f"the {loader.split} split yielded {seen} samples, its catalogue lists {loader.num_samples}")


def source_outputs(ctx, model, head, split: str):
    from trd.attacks import collect_outputs

    c = ctx.config
    ensure_role_shards(c["source"])
    # One process reads the whole split in its fixed order (no augmentation), so sample positions are stable.
    loader = build_loader(c["source"], split, int(c["mia"]["batch_size"]), train=False, seed=0,
                          num_workers=c["data_options"]["num_workers"], skip_corrupt=c["data_options"]["skip_corrupt"])
    rng = np.random.default_rng([c["mia"]["seed"], split == "train"])
    n = min(int(c["mia"]["max_samples"]), loader.num_samples)
    chosen = np.sort(rng.choice(loader.num_samples, size=n, replace=False))
    return collect_outputs(model, sample_batches(loader, chosen), ctx.device, head=head,
                           grad_norms=c["mia"]["grad_norms"])


def run(ctx) -> dict:
    from trd.attacks import (
        run_all,  # scikit-learn: imported by mia jobs only, not by every stage job
    )

    c = ctx.config
    if not ctx.env.is_main:  # the attack is one process's work; other ranks only wait for it
        return {}
    model_dir = ctx.input("model")
    model_cfg = c["model"]
    model = load_released(model_dir, device=ctx.device,
                          expected={"name": model_cfg["name"], "image_size": int(c["source"]["image_size"]),
                                    "options": {k: v for k, v in model_cfg.items() if k != "name"}})
    head = load_source_head(model_dir, model.feature_dim, int(c["source"]["num_classes"]))
    if head is None:
        return {"mia": None, "skipped": "no source head: the model never had source outputs to attack "
                                        "(trained from scratch on the target)"}
    head = head.to(ctx.device)
    members = source_outputs(ctx, model, head, "train")
    nonmembers = source_outputs(ctx, model, head, "test")
    results = run_all(members, nonmembers, seed=int(c["mia"]["seed"]))
    return {
        "mia": results,
        "members": len(members), "nonmembers": len(nonmembers),
        # The generalisation gap is what most of these attacks feed on.
        "source_acc": {"members": float(np.mean(members.logits.argmax(1) == members.labels)),
                       "nonmembers": float(np.mean(nonmembers.logits.argmax(1) == nonmembers.labels))},
    }


KIND = StageKind("mia", plan, run, reported=True, inputs=("model",), attack_labels=("attacks",), schema=MiaConfig)
