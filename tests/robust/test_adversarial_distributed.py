"""The adversarial training step on 2 gloo ranks under DeepSpeed ZeRO 0 and 2 (half the batch each) equals the
same step in one plain process over both halves: the attack's input gradients leave ZeRO's parameter hooks
alone, and the engine's reduction averages the ranks' gradients."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from adversarial_deepspeed_step import _model, plain_step  # noqa: E402


def test_two_ranks_equal_one_process(tmp_path):
    out = tmp_path / "steps.pt"
    proc = subprocess.run([sys.executable, str(HERE / "adversarial_deepspeed_step.py"), "2", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(out, weights_only=True)
    expected = plain_step()
    start = dict(_model().named_parameters())
    assert any(not torch.equal(expected[n], start[n]) for n in expected)
    assert set(results) == {0, 2}
    for stage, params in results.items():
        for name, value in params.items():
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=f"ZeRO-{stage}: {name}")
