"""CARTL's k against trd's: the study's reference code splits WRN-34 into 17 blocks (the 15 residual blocks in
order, the final BatchNorm-ReLU, the classifier; the stem is never trained) and trains the last k of them. trd
trains the last k residual blocks plus the neck and the head, so the study's k = 4, 6, 8 are trd's k = 2, 4, 6
exactly, which configs/recipe/cartl_wrn.yaml and the README state."""
from __future__ import annotations

import pytest

from trd.models import build_model
from trd.models.last_k import freeze_for_last_k


def _study_blocks(model) -> list[list[str]]:
    """Parameter names of the study's 17 blocks, written out from its partition rather than from trd's block list."""
    names = [n for n, _ in model.named_parameters()]
    residual = [[n for n in names if n.startswith(f"layer{g}.{i}.")] for g in (1, 2, 3) for i in range(5)]
    final_bn = [n for n in names if n.startswith("neck.")]
    classifier = [n for n in names if n.startswith("head.")]
    return [*residual, final_bn, classifier]


@pytest.mark.parametrize("study_k", [4, 6, 8])
def test_the_studys_k_trains_what_trd_k_minus_two_trains(study_k):
    model = build_model("wrn34_1", num_classes=10, image_size=32)
    blocks = _study_blocks(model)
    assert len(blocks) == 17 and all(blocks)
    freeze_for_last_k(model, study_k - 2)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n for block in blocks[17 - study_k:] for n in block}
    assert not any(n.startswith("stem.") for n in trained)
