"""Renofeation's parts against references built the slow obvious way: the block distillation and L2-SP in
float64 loops, SWA's averaged weights as the mean of the snapshots it was due to take (at the constant learning
rate it holds), and the dropout forward that distils the pre-dropout block outputs and is the plain forward in
eval mode."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trd.engine.swa import SwaSchedule, WithAverage
from trd.losses.feature_distillation import block_distillation
from trd.losses.l2sp import l2sp_penalty, starting_point
from trd.models import build_model
from trd.models.spatial_dropout import forward_with_dropout


def test_block_distillation_matches_a_float64_loop():
    g = torch.Generator().manual_seed(0)
    student = {n: torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64, requires_grad=True) for n in "ab"}
    teacher = {n: torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64) for n in "ab"}
    reference = torch.zeros((), dtype=torch.float64)
    for n in "ab":
        for i in range(3):
            reference = reference + ((student[n][i] - teacher[n][i]) ** 2).sum() / 3
    ours = block_distillation(student, teacher)
    torch.testing.assert_close(ours, reference)
    for got, want in zip(torch.autograd.grad(ours, list(student.values())),
                         torch.autograd.grad(reference, list(student.values()))):
        torch.testing.assert_close(got, want)


def test_l2sp_pulls_the_body_toward_its_start_and_the_head_toward_zero():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, image_size=8, width=2).double()
    start = starting_point(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    reference = torch.zeros((), dtype=torch.float64)
    for name, p in model.named_parameters():
        if name.startswith("head."):
            reference = reference + 0.3 / 2 * (p ** 2).sum()
        else:
            reference = reference + 0.1 / 2 * ((p - start[name]) ** 2).sum()
    torch.testing.assert_close(l2sp_penalty(model, start, 0.1, 0.3), reference)


def test_swa_averages_exactly_the_snapshots_it_was_due_to_take_at_its_constant_learning_rate():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, image_size=8, width=2)
    wrapped = WithAverage(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    schedule = SwaSchedule(start_step=3, every=3, lr=0.05)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(9)]
    snapshots, lrs = [], []
    for step, (x, y) in enumerate(batches):
        if schedule.due(step):
            snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})
        schedule.before_step(wrapped, optimizer, step)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})  # the final weights are due
    averaged = schedule.finish(wrapped, len(batches), batches, torch.device("cpu"))
    assert [s for s in range(10) if schedule.due(s)] == [3, 6, 9]
    assert lrs == [0.5] * 3 + [0.05] * 6
    assert int(wrapped.average.n_averaged) == len(snapshots) == 3
    for name, p in averaged.named_parameters():
        torch.testing.assert_close(p, sum(s[name] for s in snapshots) / len(snapshots))
    bn = next(m for m in averaged.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) > 0  # update_bn recomputed the averaged model's statistics


def test_the_dropout_forward_distils_pre_dropout_outputs_and_is_the_plain_forward_in_eval_mode():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, image_size=8, width=4)
    x = torch.randn(4, 3, 8, 8)
    model.eval()
    logits, taps = forward_with_dropout(model, x, ["stem", "block0"], 0.5)
    plain_logits, plain_taps = model.forward_with_taps(x, ["stem", "block0"])
    torch.testing.assert_close(logits, plain_logits)
    torch.testing.assert_close(taps["block0"], plain_taps["block0"])
    model.train()
    torch.manual_seed(1)
    _, taps = forward_with_dropout(model, x, ["stem"], 0.5)
    torch.manual_seed(1)
    stem = model.stem(x)
    torch.testing.assert_close(taps["stem"], stem)  # the tap is before the dropout
    dropped = F.dropout2d(stem, 0.5, training=True)
    channel_zero = (dropped == 0).flatten(2).all(2)
    assert channel_zero.any() and not channel_zero.all()  # whole channels are dropped, not all of them
