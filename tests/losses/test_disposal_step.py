"""The disposal step's options: class-disjoint GC chunks and SRC-KD through the target head."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from trd.losses import distillation_loss, frozen_teacher
from trd.losses.disposal_step import DisposalStep, class_disjoint_order
from trd.models import build_model
from trd.models.source_view import WithSourceHead


def test_class_disjoint_order_groups_classes_into_chunks():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(8).repeat_interleave(4)[torch.randperm(32, generator=g)]  # 8 classes x 4 samples, shuffled
    x = torch.arange(32).float()[:, None] * 10 + y[:, None]  # each row remembers its label
    xs, ys = class_disjoint_order(x, y, 8, torch.Generator().manual_seed(1))
    assert torch.equal(xs[:, 0] % 10, ys.float())  # rows move with their labels
    chunks = [set(c.tolist()) for c in ys.chunk(4)]
    assert all(len(c) == 2 for c in chunks) and len(set.union(*chunks)) == 8  # 4 disjoint groups of 2 classes
    assert sorted(ys.tolist()) == sorted(y.tolist())


def test_src_kd_through_the_target_head_distils_target_logits_on_source_images():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, image_size=8, width=4, batchnorm=False)  # same outputs in any mode
    module = WithSourceHead(model, torch.nn.Linear(model.feature_dim, 5))
    teacher = frozen_teacher(module)
    with torch.no_grad():
        module.model.head.weight.add_(torch.randn_like(module.model.head.weight))  # student and teacher differ
    x = torch.randn(4, 3, 8, 8)
    cfg = {"method": "unif", "retain": "src-kd", "lam": 0.0, "temperature": 2.0, "chunks": 2, "kd_head": "target"}
    loss, scalars = DisposalStep(cfg, teacher, None, seed=0)(SimpleNamespace(module=module), x, torch.zeros(4).long(), 0)
    expected = distillation_loss(module(x), teacher(x), 2.0)
    torch.testing.assert_close(torch.tensor(scalars["retain"]), expected.detach(), rtol=1e-4, atol=1e-6)
    source_kd = distillation_loss(module.source(x), teacher.source(x), 2.0)
    # only the target head was changed: distilling through the source head would see no difference at all
    assert expected.item() > 1e-3 and source_kd.item() < 1e-6


class _IndexedLoader:
    """A train loader whose batch i of epoch e is a pure function of (e, i), like trd's."""
    steps_per_epoch = 5

    def set_epoch(self, epoch):
        self.epoch = epoch

    def iter_from(self, step):
        for i in range(step, self.steps_per_epoch):
            g = torch.Generator().manual_seed(100 * self.epoch + i)
            yield torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)

    def __iter__(self):
        return self.iter_from(0)


def test_a_resumed_nft_step_draws_the_attackers_and_batches_an_uninterrupted_one_would():
    from trd.config import plain
    from trd.engine.cycle import SideStream
    from trd.stages.dispose import SimulatedAttackersConfig

    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, image_size=8, width=4)
    module = WithSourceHead(model, torch.nn.Linear(model.feature_dim, 5))
    nft = {**plain(SimulatedAttackersConfig()), "steps": [1, 3], "second_order_steps": 0}
    cfg = {"method": "nft", "retain": "src-kd", "lam": 0.5, "temperature": 2.0, "kd_head": "source", "nft": nft}
    engine = SimpleNamespace(module=module)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    teacher = frozen_teacher(module)  # the released model as the stage loads it, before and after a preemption

    def run(first, last):
        step = DisposalStep(cfg, teacher, None, seed=7, attacker_batches=SideStream(_IndexedLoader(), 3))
        return [step(engine, x, y, s)[1] for s in range(first, last)]

    uninterrupted, resumed = run(0, 4), run(2, 4)
    assert resumed == uninterrupted[2:]
    assert len({s["nft/log10_lr"] for s in uninterrupted}) == 4  # a new attacker every step
