"""One optimisation step of Disposable Transfer Learning (Koh et al., ICCV 2023) on a released model
with its private source head:

    L_DTL = (1 - lam) * L_retain + lam * L_unlearn

L_unlearn (on source batches): gc / ngc (gradient collision), rand, unif, neg, or nft (the bounded loss of a
simulated attacker's fine-tuned source model, trd.meta.simulated_attack). L_retain: src-kd (distil the
frozen released model on source data, through its source or its target head), tgt-kd, tgt-ce, or tgt-agem
(target CE, with the unlearning gradient projected so that it never increases the target loss to first order).
With gc/ngc, SRC-KD is fused by default: its logits come from GC's own forward of the source batch and its
gradient from GC's backward (trd.losses.gradient_collision.JointTerm), one forward instead of two.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from trd.losses.agem import agem_project
from trd.losses.double_backward_mode import fast_double_backward
from trd.losses.gradient_collision import JointTerm, collision_with_joint_loss
from trd.losses.objective import dtl_objective
from trd.losses.resistance import resistance_loss
from trd.losses.retaining import RETAINING_LOSSES, retaining_loss
from trd.losses.unlearning import UNLEARNING_LOSSES, unlearning_loss
from trd.meta.simulated_attack import AttackerDistribution, attacked_loss, sample_attacker
from trd.models.source_view import WithSourceHead

COLLISION = ("gc", "ngc")
SIMULATED = ("nft",)
UNLEARN = COLLISION + UNLEARNING_LOSSES + SIMULATED
RETAIN = RETAINING_LOSSES + ("tgt-agem",)
CHUNKINGS = ("random", "class")
KD_HEADS = ("source", "target")


def class_disjoint_order(x, y, num_classes: int, generator: torch.Generator):
    """The batch sorted by a fresh random order of the classes, so equal consecutive chunks hold (nearly)
    disjoint groups of classes.

    With random chunks E[g_m . g_n] = |grad L_source|^2, so GC is an estimate of the squared source gradient
    and descending it pulls towards the source optimum; with class-disjoint chunks the pair term rewards
    large, mutually cancelling per-class-group gradients instead (bench/README.md, GC disposal regime).
    """
    rank = torch.randperm(num_classes, generator=generator)[y.cpu()]
    order = torch.sort(rank, stable=True).indices.to(y.device)
    return x[order], y[order]


def attacker_distribution(nft: dict) -> AttackerDistribution:
    """The simulated attackers of a dispose.nft config node."""
    lr = {name: tuple(nft[f"{name}_lr"]) for name in nft["optimizers"]}
    return AttackerDistribution(lr=lr, steps=tuple(nft["steps"]), linear_share=float(nft["linear_share"]),
                                second_order_steps=int(nft["second_order_steps"]), momentum=float(nft["momentum"]),
                                head=nft.get("head", "random"))


def _params(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


class DisposalStep:
    """One optimisation step of L_DTL; keeps running sums of what TensorBoard shows per epoch."""

    def __init__(self, cfg: dict, teacher: WithSourceHead, target_batches, seed: int, attacker_batches=None):
        """attacker_batches (nft): a SideStream of source batches, max inner steps of them per step."""
        self.cfg, self.teacher, self.target_batches = cfg, teacher, target_batches
        self._target = None
        self.method, self.retain, self.lam = cfg["method"], cfg["retain"], float(cfg["lam"])
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.attacker_batches = attacker_batches
        self.attackers = attacker_distribution(cfg["nft"]) if self.method in SIMULATED else None
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def _fused(self) -> bool:
        """Whether SRC-KD reads the GC step's own forward (one forward and one backward traversal for both)."""
        return self.method in COLLISION and self.retain == "src-kd" and bool(self.cfg.get("fused", True))

    def _kd_view(self, module: WithSourceHead):
        # kd_head=target keeps what the released model says about source images, not the source task itself.
        return module.source if self.cfg.get("kd_head", "source") == "source" else module

    def _joint_kd(self, module: WithSourceHead, x) -> JointTerm:
        with torch.no_grad():
            teacher_logits = self._kd_view(self.teacher)(x)
        temperature = float(self.cfg["temperature"])

        def kd(student_logits, rows: slice):
            return retaining_loss("src-kd", student_logits, teacher_logits=teacher_logits[rows],
                                  temperature=temperature)

        both = module.source.forward_both_heads if self.cfg.get("kd_head", "source") == "target" else None
        return JointTerm(kd, both)

    def _unlearn(self, module: WithSourceHead, x, y, global_step: int):
        if self.method in SIMULATED:
            # Seeded by the step, so a resumed job samples the attackers an uninterrupted one would have.
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + global_step)
            attacker = sample_attacker(self.attackers, generator)
            batches = self.attacker_batches.draw(global_step, x.device)
            kind = self.cfg["nft"]["loss"]
            loss, stats = attacked_loss(module.model, attacker, lambda t: batches[t], (x, y),
                                        module.source_head.out_features,
                                        lambda logits, labels: resistance_loss(kind, logits, labels), generator,
                                        double_backward=fast_double_backward)
            return loss, stats, None
        if self.method in COLLISION and self.cfg.get("chunking", "random") == "class":
            x, y = class_disjoint_order(x, y, module.source_head.out_features, self.generator)
        if self.method in COLLISION:
            # The engine's gradient all-reduce (an average over ranks) completes GC's gradient, so a step
            # costs two parameter-sized all-reduces, as in the paper's Algorithm 1. A-GEM projects the
            # whole unlearning gradient itself, so it needs GC's own reduction.
            # Fused: SRC-KD on the same (possibly class-ordered) batch, from GC's forward.
            joint = self._joint_kd(module, x) if self._fused() else None
            loss, retained, stats = collision_with_joint_loss(
                module.source, x, y, int(self.cfg["chunks"]), joint, normalized=self.method == "ngc",
                return_stats=True, reduce_gradient=self.retain == "tgt-agem", hvp=self.cfg.get("hvp", "exact"),
                fd_scale=float(self.cfg.get("fd_scale", 0.1)))
            return loss, stats.as_floats(), retained
        return unlearning_loss(self.method, module.source(x), y, generator=self.generator), {}, None

    def _retain(self, module: WithSourceHead, x_source):
        if self.retain == "src-kd":
            with torch.no_grad():
                teacher_logits = self._kd_view(self.teacher)(x_source)
            return retaining_loss("src-kd", self._kd_view(module)(x_source), teacher_logits=teacher_logits,
                                  temperature=float(self.cfg["temperature"]))
        x_t, y_t = (t.to(x_source.device) for t in next(self._target))
        if self.retain == "tgt-kd":
            with torch.no_grad():
                teacher_logits = self.teacher(x_t)
            return retaining_loss("tgt-kd", module(x_t), teacher_logits=teacher_logits,
                                  temperature=float(self.cfg["temperature"]))
        return retaining_loss("tgt-ce", module(x_t), targets=y_t)

    def __call__(self, engine, x, y, global_step):
        if self._target is None and self.target_batches is not None:
            # A stream started at the first step this process runs: a resumed job draws the target batches an
            # uninterrupted one would have drawn from this step on.
            self._target = (self.target_batches(global_step) if callable(self.target_batches)
                            else self.target_batches)
        module: WithSourceHead = engine.module
        unlearn, stats, fused_retain = self._unlearn(module, x, y, global_step)
        retain = fused_retain if fused_retain is not None else self._retain(module, x)
        loss = dtl_objective(retain, unlearn, self.lam)
        scalars = {"retain": float(retain.detach()), "unlearn": float(unlearn.detach()), **stats}
        for key, value in scalars.items():
            self.sums[key] += value
        self.count += 1
        if self.retain != "tgt-agem":
            return loss, scalars
        # A-GEM: the unlearning gradient loses its component against the target gradient; the engine then
        # receives the combined gradient through a surrogate whose gradient it is exactly.
        params = _params(module)
        g_retain = torch.autograd.grad(retain, params, allow_unused=True)
        g_unlearn = torch.autograd.grad(unlearn, params, allow_unused=True)
        zeros = [torch.zeros_like(p) for p in params]
        g_retain = [g if g is not None else z for g, z in zip(g_retain, zeros)]
        g_unlearn = [g if g is not None else z for g, z in zip(g_unlearn, zeros)]
        projected = agem_project(g_unlearn, g_retain)
        surrogate = sum(((1 - self.lam) * gr + self.lam * gu).mul(p).sum()
                        for p, gr, gu in zip(params, g_retain, projected))
        return surrogate, {**scalars, "loss": float(loss.detach())}

    def epoch_means(self) -> dict[str, float]:
        means = {f"loss/{k}": v / max(1, self.count) for k, v in self.sums.items()}
        self.sums.clear()
        self.count = 0
        return means
