import pytest
import torch
from torch import nn

from trd.losses.chunked_batch_norm import _ChunkedBatchNormTrainBackward
from trd.losses.double_backward_mode import fast_double_backward


def hessian_vector_product(module, x, params, fast):
    """Gradient of <grad f, v> for a scalar f of the module output, through the BN first backward."""
    with fast_double_backward() if fast else torch.enable_grad():
        out = module(x * 1.3)
    weights = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view(out.shape)
    grads = torch.autograd.grad((torch.tanh(out) ** 2 * weights).sum(), params, create_graph=True)
    directions = [torch.randn(g.shape, generator=torch.Generator().manual_seed(i), dtype=g.dtype) for i, g in enumerate(grads)]
    return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, directions)), params)


@pytest.mark.parametrize(
    "shape, affine",
    [((6, 4), True), ((5, 4, 7), True), ((3, 4, 3, 3), True), ((2, 4, 2, 3, 2), True), ((3, 4, 3, 3), False)],
)
def test_double_backward_equals_native(shape, affine):
    norm = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)](4, affine=affine).double()
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    params = [x, *norm.parameters()]
    native = hessian_vector_product(norm, x, params, fast=False)
    fast = hessian_vector_product(norm, x, params, fast=True)
    for got, want in zip(fast, native):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunks", [1, 2])
def test_hand_derived_backward_passes_gradcheck(chunks):
    generator = torch.Generator().manual_seed(0)
    dy = torch.randn(4, 3, 2, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, 2, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(3, generator=generator, dtype=torch.float64).add(0.5).requires_grad_()

    def first_backward(dy, x, weight):
        # Each chunk's mean/invstd recomputed from x, so the numerical derivative sees their dependence on x.
        stats = [torch.native_batch_norm(x_m.detach(), None, None, None, None, True, 0.0, 1e-5)[1:]
                 for x_m in x.chunk(chunks)]
        mean, invstd = (torch.stack(s) for s in zip(*stats))
        return _ChunkedBatchNormTrainBackward.apply(dy, x, weight, mean, invstd, 1e-5, chunks)

    assert torch.autograd.gradcheck(first_backward, (dy, x, weight))


def test_forward_running_stats_and_eval_mode_are_unchanged():
    fast_norm, native_norm = nn.BatchNorm2d(3).double(), nn.BatchNorm2d(3).double()
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with fast_double_backward():
        fast_out = fast_norm(x)
    torch.testing.assert_close(fast_out, native_norm(x))
    for got, want in zip(fast_norm.buffers(), native_norm.buffers()):
        torch.testing.assert_close(got, want)
    fast_norm.eval()
    native_norm.eval()
    with fast_double_backward():
        torch.testing.assert_close(fast_norm(x), native_norm(x))
