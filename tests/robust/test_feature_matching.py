"""Feature distillation between two architectures (trd.models.feature_matching): blocks paired by resolution, and
the 1x1 matching convolution's distance and gradient against a float64 reference written pixel by pixel."""
from __future__ import annotations

import pytest
import torch

from trd.losses.feature_distillation import block_distillation
from trd.models import build_model
from trd.models.feature_matching import FeatureMatching, StudentWithMatching, pair_blocks


def test_each_stage_end_of_the_teacher_meets_the_students_last_block_of_its_resolution():
    teacher, student = build_model("resnet18", 10, 32), build_model("mobilenet_v2", 10, 32, width=0.25)
    assert pair_blocks(student, teacher, None, 32) == [
        ["blocks.3", "layer1.1"], ["blocks.6", "layer2.1"], ["blocks.13", "layer3.1"], ["blocks.18", "layer4.1"]]
    assert pair_blocks(student, teacher, ["stem", "layer3.0"], 32) == [["blocks.3", "stem"], ["blocks.13", "layer3.0"]]
    with pytest.raises(ValueError, match="resnet18's block layer4.1 is 4x4; cnn has no block of that size"):
        pair_blocks(build_model("cnn", 10, 32), teacher, ["layer4.1"], 32)


def test_matched_distance_and_gradient_equal_the_pixel_by_pixel_reference():
    generator = torch.Generator().manual_seed(0)
    batch, size = 3, 4
    student = {"s1": torch.randn(batch, 5, size, size, generator=generator, dtype=torch.float64),
               "s2": torch.randn(batch, 6, 2, 2, generator=generator, dtype=torch.float64)}
    teacher = {"t1": torch.randn(batch, 7, size, size, generator=generator, dtype=torch.float64),
               "t2": torch.randn(batch, 6, 2, 2, generator=generator, dtype=torch.float64)}
    matching = FeatureMatching([["s1", "t1"], ["s2", "t2"]], [(5, 7), (6, 6)]).double()
    assert isinstance(matching.convs[1], torch.nn.Identity)  # equal widths need no convolution
    distance = block_distillation(matching(student), teacher)
    distance.backward()

    weight = matching.convs[0].weight.detach()[:, :, 0, 0]  # (7, 5)
    want, want_grad = torch.zeros((), dtype=torch.float64), torch.zeros_like(weight)
    for b in range(batch):
        for (s, t), mapped in (("s1", "t1"), True), (("s2", "t2"), False):
            for h in range(student[s].shape[2]):
                for w in range(student[s].shape[3]):
                    x = student[s][b, :, h, w]
                    residual = (weight @ x if mapped else x) - teacher[t][b, :, h, w]
                    want = want + residual.pow(2).sum() / batch
                    if mapped:
                        want_grad += 2 * torch.outer(residual, x) / batch
    torch.testing.assert_close(distance, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(matching.convs[0].weight.grad[:, :, 0, 0], want_grad, rtol=1e-12, atol=1e-12)


def test_the_wrapped_student_computes_the_students_function():
    torch.manual_seed(0)
    student, teacher = build_model("cnn", 4, 16, width=8), build_model("cnn", 4, 16)
    pairs = pair_blocks(student, teacher, None, 16)
    wrapped = StudentWithMatching(student, FeatureMatching.between(student, teacher, pairs, 16)).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(wrapped(x), student(x))
    assert [conv.weight.shape for conv in wrapped.matching.convs] == [(32, 8, 1, 1), (128, 32, 1, 1)]
