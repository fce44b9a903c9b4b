"""A Reverse-MAML meta step on 2 gloo ranks under DeepSpeed ZeRO 0, 1 and 2 (two tasks per rank) equals the same
step in one plain PyTorch process on all four tasks: the engine's gradient hooks fire once per parameter, after
the inner loops, and its reduction averages the ranks' meta-gradients."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from meta_deepspeed_step import _model, plain_step  # noqa: E402


def test_two_ranks_under_each_zero_stage_match_one_plain_process(tmp_path):
    out = tmp_path / "steps.pt"
    proc = subprocess.run([sys.executable, str(HERE / "meta_deepspeed_step.py"), "2", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(out, weights_only=True)
    expected = plain_step()
    start = dict(_model().named_parameters())
    assert any(not torch.equal(expected[n], start[n]) for n in expected)  # the step moved the weights
    assert set(results) == {0, 1, 2}
    for stage, params in results.items():
        assert params.keys() == expected.keys()
        for name, value in params.items():
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=f"ZeRO-{stage}: {name}")
