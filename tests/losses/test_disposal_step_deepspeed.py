"""A disposal step (GC + SRC-KD, fused) under DeepSpeed ZeRO 0, 1 and 2, on 1 and 2 gloo ranks, equals the same
step in plain PyTorch: the engine's gradient hooks and reduction leave the gradient-collision gradient intact,
in both GC executions (batched for the CNN, per chunk for the ViT) and with either Hessian-vector execution
(exact, finite differences)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trd.losses.chunked_forward import supports_chunked_forward

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from deepspeed_step import ARCHITECTURES, HVPS, _module, plain_step  # noqa: E402


@pytest.mark.parametrize("world", [1, 2])
def test_deepspeed_zero_stages_match_plain_pytorch(world, tmp_path):
    out = tmp_path / "steps.pt"
    proc = subprocess.run([sys.executable, str(HERE / "deepspeed_step.py"), str(world), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(out, weights_only=True)
    assert {(arch, hvp) for arch, _, hvp in results} == {(a, h) for a in ARCHITECTURES for h in HVPS}
    images = torch.zeros(2, 3, 8, 8)
    assert supports_chunked_forward(_module("cnn").source, images)  # batched
    assert not supports_chunked_forward(_module("vit").source, images)  # chunk by chunk
    for arch in ARCHITECTURES:
        for hvp in HVPS:
            expected = plain_step(arch, hvp)
            # A difference quotient divides the round-off of two chunk gradients by its small step.
            tolerance = dict(rtol=1e-5, atol=1e-6) if hvp == "exact" else dict(rtol=1e-4, atol=1e-5)
            for (result_arch, stage, result_hvp), params in results.items():
                if (result_arch, result_hvp) != (arch, hvp):
                    continue
                assert params.keys() == expected.keys()
                for name, value in params.items():
                    torch.testing.assert_close(value, expected[name], **tolerance,
                                               msg=f"{arch}, {hvp}, ZeRO-{stage}, {world} rank(s): {name}")
        # the step moved the parameters: the comparison is not of untouched weights
        start = dict(_module(arch).named_parameters())
        assert any(not torch.allclose(expected[n], start[n]) for n in expected)
