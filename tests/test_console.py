"""The live view of an experiment (trd.console) and the progress files it reads (trd.progress): plain lines
without a terminal, a rich table on one, and a display that degrades instead of failing."""
from __future__ import annotations

import importlib.util
import io
import json
import os
from pathlib import Path

import pytest

from trd import console, contract
from trd.console import LiveView, progress_text, watch
from trd.progress import ProgressFile, read_progress, seconds_left


def _experiment(tmp_path: Path, stages: dict[str, dict | None]) -> Path:
    """An experiment dir whose stages have the given metrics.json (None: not started)."""
    exp = tmp_path / "exp"
    exp.mkdir()
    plan = {}
    for name, metrics in stages.items():
        d = tmp_path / "stages" / name
        d.mkdir(parents=True)
        if metrics is not None:
            (d / contract.METRICS_FILE).write_text(json.dumps(metrics))
        plan[name] = {"kind": name, "hash": name, "dir": str(d), "model_labels": {}, "attack_labels": {},
                      "inputs": {}, "lineage": name}
    (exp / contract.PLAN_FILE).write_text(json.dumps({"format": contract.PLAN_FORMAT, "stages": plan}))
    return exp


def _set(exp: Path, name: str, metrics: dict) -> None:
    (exp.parent / "stages" / name / contract.METRICS_FILE).write_text(json.dumps(metrics))


@pytest.fixture
def owned(monkeypatch):
    """Running stages count as owned by a live job (the owner check is tests/test_owner.py's)."""
    monkeypatch.setattr("trd.status.read_owner", lambda stage_dir: {"pid": os.getpid()})
    monkeypatch.setattr("trd.status.alive", lambda owner: True)


def _status_main():
    """launch/status.py's main(), loaded from its file (launch/ is not a package)."""
    spec = importlib.util.spec_from_file_location("launch_status", Path(__file__).parents[1] / "launch" / "status.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_progress_file_is_replaced_whole_and_at_most_every_interval(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("trd.progress.time.monotonic", lambda: clock[0])
    live = ProgressFile(tmp_path, every_s=2.0)
    live.phase("train 1/2", 0, 40)
    assert read_progress(tmp_path)["step"] == 0
    live.step(1, 2.5)
    assert read_progress(tmp_path)["step"] == 0  # within the interval: not written
    clock[0] += 2.0
    live.step(10, 1.5)
    progress = read_progress(tmp_path)
    assert (progress["step"], progress["steps"], progress["loss"], progress["rate"]) == (10, 40, 1.5, 5.0)
    assert seconds_left(progress) == pytest.approx(6.0)
    live.note(point=2, points=3)  # a grid: the third point still to come counts as long as this one
    assert read_progress(tmp_path).get("point") is None  # notes wait for the next write
    clock[0] += 2.0
    live.step(20, 1.0)
    assert seconds_left(read_progress(tmp_path)) == pytest.approx((20 + 40) / 5.0)
    assert [p.name for p in tmp_path.iterdir()] == [contract.PROGRESS_FILE]  # no temporary file left behind


def test_unreadable_progress_is_unknown_and_an_unwritable_one_never_fails_the_stage(tmp_path):
    (tmp_path / contract.PROGRESS_FILE).write_text('{"step": 3, "ste')  # half a file (a foreign writer)
    assert read_progress(tmp_path) is None and progress_text(None) == "progress unknown"
    live = ProgressFile(tmp_path / "gone")  # its directory does not exist: every write fails
    live.phase("train", 0, 10)
    live.step(5, float("nan"))


def test_plain_lines_say_each_state_change_and_progress_at_most_every_30_s(tmp_path, monkeypatch, owned):
    exp = _experiment(tmp_path, {"pretrain": {"status": "done"}, "transfer": None, "evaluate": None})
    clock = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    view = LiveView(exp, stream=out, interactive=False, reused={"pretrain"})
    view.update()
    _set(exp, "transfer", {"status": "running"})
    ProgressFile(exp.parent / "stages" / "transfer").phase("train 1/3", 5, 30)
    view.update()
    clock[0] = 10.0
    view.update()  # nothing changed, within 30 s: silent
    clock[0] = 31.0
    view.update()
    _set(exp, "transfer", {"status": "done"})
    _set(exp, "evaluate", {"status": "failed", "error": "ValueError: boom"})
    view.close()
    lines = [line.split(" ", 2)[2] for line in out.getvalue().splitlines()]
    assert lines == ["3 stages: 1 reused, 2 pending", "transfer: running",
                     "transfer: train 1/3 · step 5/30", "transfer: done", "evaluate: failed (ValueError: boom)"]


def test_terminal_view_is_one_table_and_a_broken_terminal_falls_back_to_lines(tmp_path, owned):
    exp = _experiment(tmp_path, {"pretrain": {"status": "running"}, "transfer": None})
    ProgressFile(exp.parent / "stages" / "pretrain").phase("pretrain 2/5", 12, 100)
    out = io.StringIO()
    view = LiveView(exp, stream=out, interactive=True)
    view.update()
    view.close()
    text = out.getvalue()
    assert "pretrain 2/5 · step 12/100" in text and "1 running, 1 pending" in text

    class Broken(io.StringIO):
        def isatty(self):
            return True

        def write(self, s):
            raise OSError("terminal gone")

    view = LiveView(exp, stream=Broken(), interactive=True)
    view.update()  # the table cannot be drawn: lines next, and those fail too: the view turns itself off
    view.update()
    assert not view.enabled


def test_a_narrow_terminal_gets_plain_lines(tmp_path, monkeypatch):
    exp = _experiment(tmp_path, {"pretrain": None})

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(console.shutil, "get_terminal_size", lambda: os.terminal_size((50, 20)))
    assert not LiveView(exp, stream=Terminal()).interactive
    monkeypatch.setattr(console.shutil, "get_terminal_size", lambda: os.terminal_size((120, 20)))
    assert LiveView(exp, stream=Terminal()).interactive


def test_watch_of_a_finished_experiment_prints_its_final_view_and_returns(tmp_path, capsys):
    main = _status_main()
    exp = _experiment(tmp_path, {"pretrain": {"status": "done", "acc": {"source": 0.5}}, "transfer": {"status": "done"}})
    rows = watch(exp, interval_s=60, stream=io.StringIO(), interactive=False)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert main([str(exp), "--watch", "--interval", "60"]) == 0
    out = capsys.readouterr().out
    assert "pretrain: done" in out and "trd: finished, 2 stages: 2 done" in out
    assert f"python launch/status.py {exp}" in out


def test_watch_ends_with_exit_1_and_the_failed_stage(tmp_path, capsys):
    main = _status_main()
    exp = _experiment(tmp_path, {"pretrain": {"status": "failed", "error": "RuntimeError: x\nValueError: y",
                                              "log": "/logs/1_0_log.err"}, "transfer": {"status": "done"}})
    (exp / contract.COMMAND_FILE).write_text("python launch/submit.py +exp=demo out_root=/o\n")
    assert main([str(exp), "--watch"]) == 1
    out = capsys.readouterr().out
    assert "trd: pretrain failed: ValueError: y\n     its log: /logs/1_0_log.err" in out
    assert "finished stages are reused): python launch/submit.py +exp=demo out_root=/o" in out
