"""torchvision's ResNet and MobileNetV2 weights become trd's models through launch/convert_weights.py with the
same function: a torchvision model (random weights: nothing is downloaded) and its conversion give the same
logits, and a file that is not the named architecture is refused with one line."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision

from trd.models import load_model, read_metadata

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "launch"))
from convert_weights import main  # noqa: E402


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_a_converted_torchvision_model_computes_the_same_logits(tmp_path, name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a misnamed buffer shows
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    out = tmp_path / "public" / f"{name}.safetensors"
    assert main([name, str(tmp_path / "weights.pth"), str(out)]) == 0
    assert read_metadata(out)["options"]["stem"] == "imagenet"
    model = load_model(out).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_a_file_of_another_architecture_is_refused_with_one_line(tmp_path, capsys):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "weights.pth")
    assert main(["resnet50", str(tmp_path / "weights.pth"), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not torchvision's resnet50" in err and "\n" not in err
    assert not (tmp_path / "out.safetensors").exists()
