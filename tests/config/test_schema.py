"""The config schema checker: types, ranges, unknown and missing keys, one-line messages."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from trd.config import ConfigError, parse, plain
from trd.config.schema import at_least, each, knob, one_of, positive, within


@dataclass
class Inner:
    lr: float = knob(rule=positive())
    betas: list[float] = knob([0.9, 0.999], each(within(0, 1, high_open=True)))


@dataclass
class Node:
    epochs: int = knob(rule=at_least(1))
    inner: Inner = knob()
    lam: float = knob(0.5, within(0, 1))
    mode: str = knob("a", one_of("a", "b"))
    k: int | None = None
    table: dict[str, Inner] = knob({})
    flag: bool = False

    def check(self, where: str) -> None:
        if self.mode == "b" and self.k is None:
            raise ConfigError(f"{where}.mode=b needs {where}.k")


def test_a_node_parses_into_its_dataclass_with_defaults_and_plain_data_back():
    node = parse(OmegaConf.create({"epochs": 3, "inner": {"lr": 1}, "table": {"x": {"lr": 0.5}}}), Node, "n")
    assert node.epochs == 3 and node.inner.lr == 1.0 and isinstance(node.inner.lr, float)
    assert node.lam == 0.5 and node.table["x"].betas == [0.9, 0.999]
    assert plain(node) == {"epochs": 3, "inner": {"lr": 1.0, "betas": [0.9, 0.999]}, "lam": 0.5, "mode": "a",
                           "k": None, "table": {"x": {"lr": 0.5, "betas": [0.9, 0.999]}}, "flag": False}


@pytest.mark.parametrize("data, message", [
    ({"epochs": 0, "inner": {"lr": 1}}, "n.epochs=0 is out of range: it must be >= 1"),
    ({"epochs": 1, "inner": {"lr": -1}}, "n.inner.lr=-1 is out of range: it must be > 0"),
    ({"epochs": 1, "inner": {"lr": 1, "betas": [0.9, 1.0]}}, "n.inner.betas=[0.9, 1.0] is out of range: it must be "
                                                             "with every element in [0, 1)"),
    ({"epochs": 1, "inner": {"lr": 1}, "lam": 1.5}, "n.lam=1.5 is out of range: it must be in [0, 1]"),
    ({"epochs": 1, "inner": {"lr": 1}, "mode": "c"}, "n.mode='c' is out of range: it must be one of a, b"),
    ({"epochs": 1.5, "inner": {"lr": 1}}, "n.epochs=1.5 must be an integer"),
    ({"epochs": True, "inner": {"lr": 1}}, "n.epochs=True must be an integer"),
    ({"epochs": 1, "inner": {"lr": "x"}}, "n.inner.lr='x' must be a number"),
    ({"epochs": 1, "inner": {"lr": 1}, "flag": 1}, "n.flag=1 must be true or false"),
    ({"epochs": 1, "inner": {"lr": 1}, "k": "x"}, "n.k='x' must be an integer or null"),
    ({"epochs": 1, "inner": {"lr": 1}, "table": {"x": {"lr": 0}}}, "n.table.x.lr=0 is out of range"),
    ({"inner": {"lr": 1}}, "n.epochs is missing: n needs it (an integer)"),
    ({"epochs": None, "inner": {"lr": 1}}, "n.epochs is missing"),
    ({"epochs": 1, "inner": {"lr": 1}, "epochz": 2}, "unknown config key n.epochz: n takes epochs, flag, inner, k, "
                                                     "lam, mode, table"),
    ({"epochs": 1, "inner": {"lr": 1}, "mode": "b"}, "n.mode=b needs n.k"),
    ([1, 2], "n must be a mapping of keys"),
])
def test_bad_values_are_one_line_errors_naming_key_value_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError) as err:
        parse(data, Node, "n")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_non_finite_number_is_refused():
    with pytest.raises(ConfigError, match="n.lam=nan must be a number"):
        parse({"epochs": 1, "inner": {"lr": 1}, "lam": float("nan")}, Node, "n")
