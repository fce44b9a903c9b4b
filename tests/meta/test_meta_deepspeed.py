"""A Reverse-MAML meta step on 2 gloo ranks under DeepSpeed ZeRO 0, 1 and 2 (two tasks per rank) equals the same
step in one plain PyTorch process on all four tasks: the engine's gradient hooks fire once per parameter, after
the inner loops, and its reduction averages the ranks' meta-gradients."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from meta_deepspeed_step import _model, plain_step  # noqa: E402

from tests.deepspeed_ranks import check_ranks_equal_one_process  # noqa: E402


def test_two_ranks_under_each_zero_stage_match_one_plain_process(tmp_path):
    check_ranks_equal_one_process(HERE / "meta_deepspeed_step.py", (0, 1, 2), plain_step(),
                                  dict(_model().named_parameters()), tmp_path / "steps.pt")
