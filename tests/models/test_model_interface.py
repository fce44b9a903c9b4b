"""The TrdModel contract, checked on a small instance of every architecture."""

import pytest
import torch
from torch import nn

from trd.models import FEATURES_TAP, TrdModel

NUM_CLASSES = 5


def test_logits_and_features_shapes(small_model, images):
    small_model.eval()
    assert isinstance(small_model, TrdModel)
    assert small_model(images).shape == (len(images), NUM_CLASSES)
    assert small_model.features(images).shape == (len(images), small_model.feature_dim)
    assert small_model.head.in_features == small_model.feature_dim


def test_block_names_are_submodule_paths_covering_the_body(small_model):
    names = small_model.block_names
    assert len(names) == len(set(names)) >= 2
    covered = set()
    for name in names:
        covered |= {id(p) for p in small_model.get_submodule(name).parameters()}
    covered |= {id(p) for p in small_model.neck.parameters()}
    covered |= {id(p) for p in small_model.head.parameters()}
    assert covered == {id(p) for p in small_model.parameters()}


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_taps_do_not_change_logits(small_model, images, mode):
    small_model.train(mode == "train")
    taps = small_model.block_names + [FEATURES_TAP]
    with torch.no_grad():
        plain = small_model(images)
        logits, tapped = small_model.forward_with_taps(images, taps)
        features = small_model.features(images)
    assert torch.equal(plain, logits)
    assert list(tapped) == taps
    assert all(t.shape[0] == len(images) for t in tapped.values())
    assert torch.equal(tapped[FEATURES_TAP], features)


def test_tapped_last_block_feeds_the_neck(small_model, images):
    small_model.eval()
    last = small_model.block_names[-1]
    with torch.no_grad():
        _, tapped = small_model.forward_with_taps(images, [last, FEATURES_TAP])
        assert torch.equal(small_model.neck(tapped[last]), tapped[FEATURES_TAP])


def test_unknown_tap_names_valid_ones(small_model, images):
    with pytest.raises(ValueError, match="unknown tap.*nope.*valid taps") as error:
        small_model.forward_with_taps(images, ["nope"])
    assert small_model.block_names[0] in str(error.value)
    assert "\n" not in str(error.value)


def test_replace_head_keeps_body(small_model, images):
    body_before = {k: v.clone() for k, v in small_model.state_dict().items() if not k.startswith("head.")}
    small_model.replace_head(7)
    assert small_model.num_classes == 7
    assert isinstance(small_model.head, nn.Linear)
    assert (small_model.head.in_features, small_model.head.out_features) == (small_model.feature_dim, 7)
    body_after = {k: v for k, v in small_model.state_dict().items() if not k.startswith("head.")}
    assert body_before.keys() == body_after.keys()
    assert all(torch.equal(body_before[k], body_after[k]) for k in body_before)
    small_model.eval()
    assert small_model(images).shape == (len(images), 7)
    with pytest.raises(ValueError, match="positive int"):
        small_model.replace_head(0)


def test_replace_head_follows_dtype(small_model):
    small_model.double()
    small_model.replace_head(3)
    assert small_model.head.weight.dtype == torch.float64


def test_last_k_parameters_grow_to_cover_everything(small_model):
    n = len(small_model.block_names)
    counts = [len(small_model.last_k_parameters(k)) for k in range(1, n + 1)]
    assert all(a < b for a, b in zip(counts, counts[1:]))
    every = {id(p) for p in small_model.parameters()}
    assert {id(p) for p in small_model.last_k_parameters(n)} == every
    head = {id(p) for p in small_model.head.parameters()}
    assert {id(p) for p in small_model.last_k_parameters(n, include_head=False)} == every - head
    names = [name for name, _ in small_model.last_k_named_parameters(1)]
    assert all(dict(small_model.named_parameters())[name] is p
               for name, p in small_model.last_k_named_parameters(1))
    assert any(name.startswith(small_model.block_names[-1] + ".") for name in names)


def test_last_k_blocks(small_model):
    n = len(small_model.block_names)
    assert small_model.last_k_blocks(1) == [small_model.get_submodule(small_model.block_names[-1])]
    assert small_model.last_k_blocks(n) == small_model.block_modules()
    for bad in (0, n + 1, 1.0):
        with pytest.raises(ValueError, match=r"k must be an int in 1\.\."):
            small_model.last_k_blocks(bad)


def trainable_ids(model):
    return {id(p) for p in model.parameters() if p.requires_grad}


def test_set_trainable_modes(small_model):
    small_model.set_trainable("linear")
    assert trainable_ids(small_model) == {id(p) for p in small_model.head.parameters()}
    small_model.set_trainable("last_k", k=2)
    assert trainable_ids(small_model) == {id(p) for p in small_model.last_k_parameters(2)}
    small_model.set_trainable("full")
    assert trainable_ids(small_model) == {id(p) for p in small_model.parameters()}


def test_set_trainable_errors(small_model):
    with pytest.raises(ValueError, match="unknown trainable mode 'body'.*'full', 'last_k', 'linear'"):
        small_model.set_trainable("body")
    with pytest.raises(ValueError, match="needs k"):
        small_model.set_trainable("last_k")
    with pytest.raises(ValueError, match="takes no k"):
        small_model.set_trainable("linear", k=1)


def test_train_step_moves_only_trainable_parameters(small_model, images):
    small_model.set_trainable("last_k", k=1)
    before = {name: p.detach().clone() for name, p in small_model.named_parameters()}
    trainable = [p for p in small_model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    loss = nn.functional.cross_entropy(small_model(images), torch.arange(len(images)) % NUM_CLASSES)
    loss.backward()
    optimizer.step()
    last_k = {name for name, _ in small_model.last_k_named_parameters(1)}
    for name, p in small_model.named_parameters():
        if name not in last_k:
            assert p.grad is None and torch.equal(p, before[name]), name
    assert any(not torch.equal(p, before[name]) for name, p in small_model.named_parameters() if name in last_k)
