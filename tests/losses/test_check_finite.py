import pytest
import torch
from torch import nn

from trd.losses import NonFiniteError, check_finite


def model_with_grads(bad=None):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    model(torch.ones(1, 2)).sum().backward()
    if bad is not None:
        model[1].weight.grad[0, 0] = bad
    return model


def test_finite_loss_and_grads_pass():
    check_finite(torch.tensor(1.5), model_with_grads(), step=3)
    check_finite(torch.tensor(1.5), nn.Linear(2, 2))  # no grads yet


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_names_the_loss_and_step(value):
    with pytest.raises(NonFiniteError, match=r"^non-finite loss at step 7: \[(nan|inf)\]$"):
        check_finite(torch.tensor(value), model_with_grads(), step=7)


def test_non_finite_gradient_names_the_parameter_and_step():
    with pytest.raises(NonFiniteError, match=r"^non-finite gradient of parameter '1\.weight' at step 12$"):
        check_finite(torch.tensor(0.1), model_with_grads(bad=float("-inf")), step=12)
    assert issubclass(NonFiniteError, FloatingPointError)
