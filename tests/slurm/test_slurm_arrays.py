"""How a fan-out becomes SLURM job arrays: every task's dependency must be exactly its own inputs' jobs."""
from __future__ import annotations

from trd.dispatch import _slurm_arrays
from trd.plan import StageSpec


def specs(*inputs: dict[str, str]) -> list[StageSpec]:
    return [StageSpec(f"evaluate/{i}", "evaluate", {}, dict(given)) for i, given in enumerate(inputs)]


def names(arrays) -> list[tuple[list[str], str | None]]:
    return [([s.name for s in part], dependency) for part, dependency in arrays]


def test_tasks_with_the_same_inputs_are_one_array_after_those_jobs():
    group = specs({"pretrained": "pretrain"}, {"pretrained": "pretrain"}, {"pretrained": "pretrain"})
    assert names(_slurm_arrays(group, {"pretrain": "7"})) == [(["evaluate/0", "evaluate/1", "evaluate/2"], "afterok:7")]


def test_task_i_after_task_i_of_one_upstream_array_is_aftercorr():
    group = specs({"model": "a"}, {"model": "b"}, {"model": "c"})
    assert names(_slurm_arrays(group, {"a": "8_0", "b": "8_1", "c": "8_2"})) == [
        (["evaluate/0", "evaluate/1", "evaluate/2"], "aftercorr:8")]


def test_inputs_that_do_not_line_up_with_one_array_split_the_fan_out():
    # An upstream array resubmitted only in part (8_1, 8_2 still queued from before), a finished input (no job),
    # and an input from another array: one array per distinct set of input jobs, never a union.
    group = specs({"model": "a"}, {"model": "b"}, {"model": "done"}, {"model": "x"}, {"model": "a2"})
    arrays = _slurm_arrays(group, {"a": "8_1", "b": "8_2", "x": "9_0", "a2": "8_1"})
    assert names(arrays) == [(["evaluate/0", "evaluate/4"], "afterok:8_1"), (["evaluate/1"], "afterok:8_2"),
                             (["evaluate/2"], None), (["evaluate/3"], "afterok:9_0")]


def test_a_task_with_several_inputs_waits_for_all_of_them():
    group = specs({"model": "a", "reference": "b"})
    assert names(_slurm_arrays(group, {"a": "3", "b": "4"})) == [(["evaluate/0"], "afterok:3:4")]


def test_a_single_task_on_one_upstream_task_is_plain_afterok():
    assert names(_slurm_arrays(specs({"model": "a"}), {"a": "8_0"})) == [(["evaluate/0"], "afterok:8_0")]
