import math

import pytest
import torch
from torch import nn

from trd.losses import (
    agem_project,
    agem_project_grads_,
    distillation_loss,
    dtl_objective,
    frozen_teacher,
    negative_ce_loss,
    random_label_loss,
    retaining_loss,
    uniform_kl_loss,
    unlearning_loss,
)


def logits_and_targets(batch=5, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    return logits, torch.randint(classes, (batch,), generator=generator)


def hand_cross_entropy(logits, labels):
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        total += -row[label] + math.log(sum(math.exp(v) for v in row))
    return total / len(labels)


def hand_softmax(row, temperature=1.0):
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def test_rand_is_cross_entropy_to_labels_from_the_generator_and_resamples():
    logits, _ = logits_and_targets()
    first = random_label_loss(logits, torch.Generator().manual_seed(7))
    labels = torch.randint(4, (5,), generator=torch.Generator().manual_seed(7))
    assert first.item() == pytest.approx(hand_cross_entropy(logits, labels), rel=1e-12)

    generator = torch.Generator().manual_seed(7)
    one, two = random_label_loss(logits, generator), random_label_loss(logits, generator)
    assert one.item() == pytest.approx(first.item(), rel=1e-12)
    assert two.item() != pytest.approx(one.item(), rel=1e-6)


def test_unif_is_kl_from_uniform_to_the_prediction():
    logits, _ = logits_and_targets()
    expected = 0.0
    for row in logits.tolist():
        probs = hand_softmax(row)
        expected += sum(0.25 * math.log(0.25 / p) for p in probs)
    assert uniform_kl_loss(logits).item() == pytest.approx(expected / 5, rel=1e-12)
    assert uniform_kl_loss(torch.zeros(3, 4)).item() == pytest.approx(0.0, abs=1e-7)


def test_neg_is_negative_cross_entropy():
    logits, targets = logits_and_targets()
    assert negative_ce_loss(logits, targets).item() == pytest.approx(-hand_cross_entropy(logits, targets), rel=1e-12)


def test_unlearning_dispatch_and_unknown_name():
    logits, targets = logits_and_targets()
    assert unlearning_loss("neg", logits, targets).item() == negative_ce_loss(logits, targets).item()
    assert unlearning_loss("unif", logits, targets).item() == uniform_kl_loss(logits).item()
    generator_a, generator_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert unlearning_loss("rand", logits, targets, generator_a).item() == random_label_loss(logits, generator_b).item()
    with pytest.raises(ValueError, match="unknown unlearning loss 'gc'"):
        unlearning_loss("gc", logits, targets)


def test_kd_is_t_squared_kl_teacher_to_student_at_temperature():
    student, _ = logits_and_targets(seed=1)
    teacher, _ = logits_and_targets(seed=2)
    temperature = 3.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p_t, p_s = hand_softmax(t_row, temperature), hand_softmax(s_row, temperature)
        expected += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    expected = expected / 5 * temperature**2
    assert distillation_loss(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-12)
    assert retaining_loss("src-kd", student, teacher_logits=teacher, temperature=temperature).item() == pytest.approx(expected, rel=1e-12)
    assert retaining_loss("tgt-kd", student, teacher_logits=teacher, temperature=temperature).item() == pytest.approx(expected, rel=1e-12)


def test_kd_sends_no_gradient_into_the_teacher():
    student, _ = logits_and_targets(seed=1)
    teacher, _ = logits_and_targets(seed=2)
    teacher.requires_grad_()
    student.requires_grad_()
    distillation_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_tgt_ce_and_retaining_errors():
    logits, targets = logits_and_targets()
    assert retaining_loss("tgt-ce", logits, targets=targets).item() == pytest.approx(hand_cross_entropy(logits, targets), rel=1e-12)
    with pytest.raises(ValueError, match="needs teacher_logits and temperature"):
        retaining_loss("src-kd", logits)
    with pytest.raises(ValueError, match="gradient projection"):
        retaining_loss("tgt-agem", logits, targets=targets)
    with pytest.raises(ValueError, match="temperature must be positive"):
        distillation_loss(logits, logits, 0.0)


def test_frozen_teacher_is_an_eval_mode_copy_without_trainable_parameters():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train()
    teacher = frozen_teacher(model)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert teacher[0].weight is not model[0].weight


def test_agem_projects_only_conflicting_gradients_by_the_formula():
    g = [torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64)]
    ref = [torch.tensor([-1.0, 1.0], dtype=torch.float64), torch.tensor([[2.0]], dtype=torch.float64)]
    dot = 1 * -1 + -2 * 1 + 0.5 * 2  # -2: conflicting
    ref_sq = 1 + 1 + 4
    projected = agem_project(g, ref)
    expected = [[1 - dot / ref_sq * -1, -2 - dot / ref_sq * 1], [[0.5 - dot / ref_sq * 2]]]
    assert projected[0].tolist() == pytest.approx(expected[0], rel=1e-12)
    assert projected[1].tolist()[0] == pytest.approx(expected[1][0], rel=1e-12)
    flat = torch.cat([t.reshape(-1) for t in projected])
    assert flat.dot(torch.cat([t.reshape(-1) for t in ref])).item() == pytest.approx(0.0, abs=1e-12)

    agreeing = [-t for t in g]
    assert all(torch.equal(a, b) for a, b in zip(agem_project(agreeing, ref), agreeing))
    flat_g, flat_ref = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert agem_project(flat_g, flat_ref)[0].tolist() == pytest.approx([0.5, 0.5])


def test_agem_in_place_on_model_grads_with_missing_grad():
    a, b = nn.Parameter(torch.tensor([1.0, 0.0])), nn.Parameter(torch.tensor([0.0]))
    a.grad = torch.tensor([1.0, 0.0])
    agem_project_grads_([a, b], [torch.tensor([-1.0, 0.0]), torch.tensor([1.0])])
    # g = (1, 0 | 0), ref = (-1, 0 | 1): dot -1, |ref|^2 2, g + ref/2 = (0.5, 0 | 0.5)
    assert a.grad.tolist() == pytest.approx([0.5, 0.0])
    assert b.grad.tolist() == pytest.approx([0.5])


def test_dtl_objective_weights_and_range():
    retain, unlearn = torch.tensor(2.0), torch.tensor(10.0)
    assert dtl_objective(retain, unlearn, 0.25).item() == pytest.approx(0.75 * 2 + 0.25 * 10)
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\]"):
        dtl_objective(retain, unlearn, 1.5)
