"""save_model / load_model / load_state: safetensors round trips and one-line mismatch errors."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from trd.models import build_model, load_model, load_state, read_metadata, save_model


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("model I/O must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def trained_a_little(model, images):
    # Moves weights and BatchNorm statistics away from their initial values, so a
    # round trip that forgot buffers would show.
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(images).logsumexp(dim=1).mean()
    loss.backward()
    optimizer.step()
    return model.eval()


def test_round_trip_is_bit_identical(small_model, images, tmp_path, no_unpickling):
    trained_a_little(small_model, images)
    path = tmp_path / "model.safetensors"
    save_model(small_model, path)
    loaded = load_model(path).eval()
    assert type(loaded) is type(small_model)
    assert (loaded.name, loaded.num_classes, loaded.image_size, loaded.options) == (
        small_model.name, small_model.num_classes, small_model.image_size, small_model.options)
    with torch.no_grad():
        assert torch.equal(loaded(images), small_model(images))
    for key, value in small_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_metadata_describes_the_build(tmp_path):
    model = build_model("vit", num_classes=4, image_size=16, depth=1, width=16, heads=2)
    model.replace_head(6)
    save_model(model, tmp_path / "nested" / "vit.safetensors")
    metadata = read_metadata(tmp_path / "nested" / "vit.safetensors")
    assert metadata == {"name": "vit", "num_classes": 6, "image_size": 16, "options": model.options}
    assert not list((tmp_path / "nested").glob("*.partial"))


def test_expected_head_mismatch_is_one_line(tmp_path):
    path = tmp_path / "released.safetensors"
    save_model(build_model("cnn", num_classes=20, image_size=16, width=4), path)
    with pytest.raises(ValueError) as error:
        load_model(path, expected={"name": "cnn", "num_classes": 10, "image_size": 16})
    message = str(error.value)
    assert "saved model head has 20 classes, expected num_classes=10" in message
    assert "\n" not in message and "image_size" not in message


def test_expected_names_every_difference(tmp_path):
    path = tmp_path / "released.safetensors"
    save_model(build_model("cnn", num_classes=20, image_size=16, width=4), path)
    with pytest.raises(ValueError, match="name='cnn', expected name='vit'.*image_size=16, expected image_size=32"):
        load_model(path, expected={"name": "vit", "image_size": 32})
    with pytest.raises(ValueError, match="option width=4, expected width=8"):
        load_model(path, expected={"options": {"width": 8}})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['classes'\]"):
        load_model(path, expected={"classes": 20})
    assert load_model(path, expected={"name": "cnn", "num_classes": 20, "options": {"width": 4}}).num_classes == 20


def test_load_state_strict_refuses_another_head(tmp_path):
    path = tmp_path / "source.safetensors"
    save_model(build_model("cnn", num_classes=20, image_size=16, width=4), path)
    target = build_model("cnn", num_classes=10, image_size=16, width=4)
    with pytest.raises(ValueError, match="saved model head has 20 classes, model num_classes=10.*strict=False"):
        load_state(target, path)


def test_load_state_non_strict_loads_body_keeps_head(tmp_path):
    source = build_model("cnn", num_classes=20, image_size=16, width=4)
    path = tmp_path / "source.safetensors"
    save_model(source, path)
    target = build_model("cnn", num_classes=10, image_size=16, width=4)
    head_before = target.head.weight.clone()
    skipped = load_state(target, path, strict=False)
    assert skipped == ["head.bias", "head.weight"]
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)


def test_load_state_names_architecture_differences(tmp_path):
    path = tmp_path / "bn.safetensors"
    save_model(build_model("cnn", num_classes=10, image_size=16, width=4), path)
    for other, expected in [
        (build_model("cnn", num_classes=10, image_size=16, width=4, batchnorm=False), "missing: block0.0.bias.*unexpected: block0.1.bias"),
        (build_model("cnn", num_classes=10, image_size=16, width=8), r"shape saved vs model: block0.0.weight \(8, 4, 3, 3\) vs \(16, 8, 3, 3\)"),
    ]:
        with pytest.raises(ValueError, match="architecture differs.*" + expected) as error:
            load_state(other, path, strict=False)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="saved model has name='cnn', model name='wrn10_1'"):
        load_state(build_model("wrn10_1", num_classes=10, image_size=16), path)


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="no trd model metadata"):
        load_model(plain)
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickled)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(pickled)


def test_save_refuses_wrapped_models(tmp_path):
    wrapped = torch.nn.Sequential(build_model("cnn", num_classes=2, image_size=16, width=4))
    with pytest.raises(ValueError, match="needs a TrdModel, got Sequential"):
        save_model(wrapped, tmp_path / "x.safetensors")
