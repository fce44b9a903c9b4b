"""build_model names, options and their one-line errors."""

import pytest

from trd.models import MODEL_NAMES, build_model, is_model_name, model_options


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_listed_name_builds(name):
    model = build_model(name, num_classes=3, image_size=32)
    assert (model.name, model.num_classes, model.image_size) == (name, 3, 32)
    assert is_model_name(name)


def test_any_wrn_depth_and_width_is_a_name():
    assert is_model_name("wrn40_2") and is_model_name("wrn34_1")
    assert not is_model_name("wrn27_2") and not is_model_name("resnet34")


@pytest.mark.parametrize("name", ["resnet34", "wrn", "VIT", "wrn28-10"])
def test_unknown_name_lists_valid_ones(name):
    with pytest.raises(ValueError, match=f"unknown model '{name}'; valid names: cnn, resnet18, resnet50, wrn") as error:
        build_model(name, num_classes=10, image_size=32)
    assert "\n" not in str(error.value)


def test_wrn_depth_must_be_6n_plus_4():
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn27_2", num_classes=10, image_size=32)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"cnn: unknown option\(s\) \['dropout'\]; valid options are \['batchnorm', 'hidden', 'width'\]"):
        build_model("cnn", num_classes=10, image_size=32, dropout=0.1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['batchnorm'\]; valid options are \['attention', "):
        build_model("vit", num_classes=10, image_size=32, batchnorm=True)


@pytest.mark.parametrize(
    "name, options",
    [("cnn", {"batchnorm": 1}), ("cnn", {"width": 8.0}), ("cnn", {"width": True}),
     ("vit", {"depth": "2"}), ("wrn16_2", {"dropout": "0.3"}), ("resnet18", {"stem": 3})],
)
def test_option_types_are_checked(name, options):
    with pytest.raises(ValueError, match=f"option {next(iter(options))}=.* must be"):
        build_model(name, num_classes=10, image_size=32, **options)


def test_int_is_accepted_for_float_options():
    model = build_model("wrn10_1", num_classes=10, image_size=32, dropout=0)
    assert model.options["dropout"] == 0.0 and isinstance(model.options["dropout"], float)


@pytest.mark.parametrize("field, value", [("num_classes", 0), ("num_classes", 2.0), ("image_size", -1)])
def test_sizes_must_be_positive_ints(field, value):
    sizes = {"num_classes": 10, "image_size": 32, field: value}
    with pytest.raises(ValueError, match=f"{field} must be a positive int"):
        build_model("cnn", **sizes)


def test_model_options_reports_defaults():
    assert model_options("cnn") == {"batchnorm": True, "width": 32, "hidden": None}
    assert model_options("wrn28_4") == {"dropout": 0.0}
    assert set(model_options("vit")) >= {"patch", "depth", "width", "heads", "attention"}


def test_options_are_resolved_for_rebuilding():
    vit = build_model("vit", num_classes=10, image_size=32, depth=1)
    assert vit.options["patch"] == 4 and vit.options["mlp_dim"] == 4 * vit.options["width"]
    rebuilt = build_model(vit.name, num_classes=10, image_size=32, **vit.options)
    assert rebuilt.options == vit.options
