"""The adversarial training step on 2 gloo ranks under DeepSpeed ZeRO 0 and 2 (half the batch each) equals the
same step in one plain process over both halves: the attack's input gradients leave ZeRO's parameter hooks
alone, and the engine's reduction averages the ranks' gradients."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from adversarial_deepspeed_step import _model, plain_step  # noqa: E402

from tests.deepspeed_ranks import check_ranks_equal_one_process  # noqa: E402


def test_two_ranks_equal_one_process(tmp_path):
    check_ranks_equal_one_process(HERE / "adversarial_deepspeed_step.py", (0, 2), plain_step(),
                                  dict(_model().named_parameters()), tmp_path / "steps.pt")
