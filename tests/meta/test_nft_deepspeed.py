"""An nft disposal step on 2 gloo ranks under DeepSpeed ZeRO 0, 1 and 2 (a different simulated attacker on each
rank) equals the same step in one plain PyTorch process over both attackers: the inner loops run on views, so
the engine's gradient hooks fire once, in the outer backward, and its reduction averages the attackers."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from nft_deepspeed_step import _model, plain_step  # noqa: E402

from tests.deepspeed_ranks import check_ranks_equal_one_process  # noqa: E402


def test_two_ranks_with_one_attacker_each_match_one_plain_process(tmp_path):
    check_ranks_equal_one_process(HERE / "nft_deepspeed_step.py", (0, 1, 2), plain_step(),
                                  dict(_model().named_parameters()), tmp_path / "steps.pt")
