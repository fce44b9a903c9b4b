"""A disposal step (GC + SRC-KD) under DeepSpeed ZeRO 0, 1 and 2, on 1 and 2 gloo ranks, equals the same
step in plain PyTorch: the engine's gradient hooks and reduction leave the gradient-collision gradient intact."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from deepspeed_step import plain_step  # noqa: E402


@pytest.mark.parametrize("world", [1, 2])
def test_deepspeed_zero_stages_match_plain_pytorch(world, tmp_path):
    out = tmp_path / "steps.pt"
    proc = subprocess.run([sys.executable, str(HERE / "deepspeed_step.py"), str(world), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = plain_step(world)
    results = torch.load(out, weights_only=True)
    for stage, params in results.items():
        assert params.keys() == expected.keys()
        for name, value in params.items():
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6,
                                       msg=f"ZeRO-{stage}, {world} rank(s): {name}")
    # the step moved the parameters: the comparison is not of untouched weights
    start = {n: p for n, p in __import__("deepspeed_step")._module().named_parameters()}
    assert any(not torch.allclose(expected[n], start[n]) for n in expected)
