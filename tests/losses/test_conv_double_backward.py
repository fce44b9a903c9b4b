import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trd.losses.conv_double_backward import convolution
from trd.losses.double_backward_mode import fast_double_backward


def second_order(module, x, fast):
    """Gradient of <grad f, v> w.r.t. the input and all parameters, through the conv first backward."""
    params = [x, *module.parameters()]
    with fast_double_backward() if fast else torch.enable_grad():
        out = module(x)
    weights = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view(out.shape)
    grads = torch.autograd.grad((torch.tanh(out) ** 2 * weights).sum(), params, create_graph=True)
    directions = [torch.randn(g.shape, generator=torch.Generator().manual_seed(i), dtype=g.dtype) for i, g in enumerate(grads)]
    return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, directions)), params)


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(4, 6, 3, padding=1), (2, 4, 5, 5)),
        (nn.Conv2d(4, 6, 3, stride=2, padding=(1, 0), dilation=(1, 2), bias=False), (2, 4, 7, 9)),
        (nn.Conv2d(4, 6, 2, stride=2, groups=2), (3, 4, 6, 6)),
        (nn.Conv1d(3, 5, 3, padding=2, dilation=2), (2, 3, 8)),
        (nn.Conv3d(2, 3, 2, stride=(1, 2, 1)), (2, 2, 3, 4, 3)),
        (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, stride=2)), (2, 3, 6, 6)),
    ],
)
def test_double_backward_equals_native(module, shape):
    module = module.double()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    native = second_order(module, x, fast=False)
    fast = second_order(module, x, fast=True)
    for got, want in zip(fast, native):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_forward_and_first_backward_equal_native_and_string_padding_or_autocast_fall_back():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    ours = convolution(x, weight, None, 1, 1, 1, 1)
    torch.testing.assert_close(ours, F.conv2d(x, weight, padding=1))
    for got, want in zip(torch.autograd.grad(ours.sum(), (x, weight)), torch.autograd.grad(F.conv2d(x, weight, padding=1).sum(), (x, weight))):
        torch.testing.assert_close(got, want)
    with fast_double_backward():
        same = F.conv2d(x, weight, padding="same")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = F.conv2d(x.float(), weight.float(), padding=1)
    assert type(same.grad_fn).__name__ == "ConvolutionBackward0"
    assert type(autocast.grad_fn).__name__ == "ConvolutionBackward0" and autocast.dtype == torch.bfloat16
