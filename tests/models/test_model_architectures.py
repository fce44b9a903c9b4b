"""Architecture-specific facts: parameter counts, stems, block layouts, size errors."""

import pytest
import torch
from torch import nn

from trd.models import build_model


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_cifar_resnet18_has_its_known_size():
    # The CIFAR ResNet-18 (3x3 stem, no max-pool) with 10 classes has 11,173,962 parameters.
    model = build_model("resnet18", num_classes=10, image_size=32)
    assert count(model) == 11_173_962
    assert model.block_names == ["stem"] + [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]
    assert model.feature_dim == 512


def test_resnet_stem_follows_image_size():
    small = build_model("resnet18", num_classes=10, image_size=64)
    large = build_model("resnet18", num_classes=10, image_size=96)
    assert (small.options["stem"], large.options["stem"]) == ("cifar", "imagenet")
    assert small.stem[0].kernel_size == (3, 3) and not any(isinstance(m, nn.MaxPool2d) for m in small.stem)
    assert large.stem[0].kernel_size == (7, 7) and any(isinstance(m, nn.MaxPool2d) for m in large.stem)
    forced = build_model("resnet18", num_classes=10, image_size=96, stem="cifar")
    assert forced.stem[0].kernel_size == (3, 3)
    with pytest.raises(ValueError, match="unknown stem 'tiny'"):
        build_model("resnet18", num_classes=10, image_size=32, stem="tiny")


def test_imagenet_stem_runs_on_large_images():
    model = build_model("resnet18", num_classes=4, image_size=96).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 4)


def test_resnet50_layout():
    model = build_model("resnet50", num_classes=10, image_size=32)
    assert len(model.block_names) == 1 + 3 + 4 + 6 + 3
    assert model.block_names[-1] == "layer4.2" and model.feature_dim == 2048
    # torchvision's ResNet-50 is 25,557,032 with the 7x7 stem and 1000 classes.
    assert count(model) == 25_557_032 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 - 2048 * 990 - 990


@pytest.mark.parametrize("name, params", [("wrn28_10", 36_479_194), ("wrn16_4", 2_748_890)])
def test_wrn_sizes_match_the_paper(name, params):
    # Zagoruyko & Komodakis report 36.5M parameters for WRN-28-10 and 2.7M for WRN-16-4.
    model = build_model(name, num_classes=10, image_size=32)
    assert count(model) == params


def test_wrn_layout():
    model = build_model("wrn34_2", num_classes=10, image_size=32)
    assert model.block_names == ["stem"] + [f"layer{g}.{i}" for g in (1, 2, 3) for i in range(5)]
    assert model.feature_dim == 128


def test_wrn_dropout_is_active_only_in_training(images):
    model = build_model("wrn10_1", num_classes=5, image_size=16, dropout=0.5)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), model(images))
        model.train()
        torch.manual_seed(0)
        first = model(images)
        assert not torch.equal(first, model(images))


def test_cnn_batchnorm_is_optional():
    with_bn = build_model("cnn", num_classes=10, image_size=32)
    without = build_model("cnn", num_classes=10, image_size=32, batchnorm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    assert with_bn.block_names == without.block_names == ["stem", "block0", "block1"]


def test_cnn_rejects_tiny_images():
    with pytest.raises(ValueError, match="image_size 2 is too small"):
        build_model("cnn", num_classes=10, image_size=2)


def test_vit_layout_and_defaults():
    model = build_model("vit", num_classes=10, image_size=32, depth=3)
    assert model.block_names == ["embed", "encoder.0", "encoder.1", "encoder.2"]
    assert model.options["patch"] == 4 and model.feature_dim == model.options["width"]
    assert model.embed.pos_embedding.shape == (1, (32 // 4) ** 2 + 1, model.feature_dim)
    assert build_model("vit", num_classes=10, image_size=224, depth=1).options["patch"] == 16


def test_vit_patch_must_divide_image_size():
    with pytest.raises(ValueError, match=r"image_size 30 is not divisible by patch 4; .*patch=3") as error:
        build_model("vit", num_classes=10, image_size=30)
    assert "\n" not in str(error.value)


def test_vit_heads_must_divide_width():
    with pytest.raises(ValueError, match="width 30 is not divisible by heads 4"):
        build_model("vit", num_classes=10, image_size=32, width=30, heads=4)


def test_vit_rejects_images_of_another_size():
    model = build_model("vit", num_classes=10, image_size=16, depth=1, width=16, heads=2)
    with pytest.raises(ValueError, match=r"built for 16x16 images, got \(32, 32\)"):
        model(torch.randn(1, 3, 32, 32))


def test_vit_fused_attention_computes_the_same_function(images):
    torch.manual_seed(0)
    math = build_model("vit", num_classes=5, image_size=16, depth=2, width=32, heads=2).eval()
    fused = build_model("vit", num_classes=5, image_size=16, depth=2, width=32, heads=2, attention="fused").eval()
    fused.load_state_dict(math.state_dict())
    # Under no_grad in eval mode MultiheadAttention may take its fast path; compare with grad on.
    torch.testing.assert_close(math(images), fused(images), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown attention 'flash'"):
        build_model("vit", num_classes=5, image_size=16, attention="flash")


def test_mobilenet_v2_is_torchvisions_network_with_a_stem_by_image_size():
    import torchvision

    # torchvision's MobileNetV2 with 1000 classes has 3,504,872 parameters; trd's head replaces its classifier.
    imagenet = build_model("mobilenet_v2", num_classes=1000, image_size=224)
    assert count(imagenet) == count(torchvision.models.mobilenet_v2(weights=None)) == 3_504_872
    assert imagenet.block_names == [f"blocks.{i}" for i in range(19)] and imagenet.feature_dim == 1280
    x = torch.randn(1, 3, 224, 224)
    assert imagenet.forward_to(x, "blocks.18").shape == (1, 1280, 7, 7)  # 32x downsampling
    cifar = build_model("mobilenet_v2", num_classes=10, image_size=32)
    assert cifar.options == {"width": 1.0, "stem": "cifar"}
    assert cifar.forward_to(torch.randn(1, 3, 32, 32), "blocks.18").shape == (1, 1280, 4, 4)  # 8x
    assert not any(getattr(m, "inplace", False) for m in cifar.modules())  # taps are never overwritten
    narrow = build_model("mobilenet_v2", num_classes=10, image_size=32, width=0.5)
    assert narrow.get_submodule("blocks.1").conv[1].out_channels == 8
    with pytest.raises(ValueError, match="width must be > 0"):
        build_model("mobilenet_v2", num_classes=10, image_size=32, width=0.0)
