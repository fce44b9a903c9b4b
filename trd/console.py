"""What the submitting console shows while an experiment's jobs run, and `launch/status.py --watch`: one view of
every stage (state, and for running ones their phase, steps, loss, rate and time left, from each stage's
progress file), refreshed in place with rich on a terminal, and as plain lines elsewhere (one per state change,
one per running stage at most every 30 s). A display error turns the view plain or off; it never reaches the
jobs or the caller."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from trd import contract
from trd.progress import read_progress, seconds_left
from trd.status import DIED, FAILED_STATES, stage_rows

ENDED = FAILED_STATES | {contract.DONE, "not run", "cancelled"}
PLAIN_PROGRESS_EVERY_S = 30.0
MIN_TABLE_WIDTH = 80  # narrower terminals get plain lines: a table wrapped over two lines is harder to read
REUSED = "reused"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_text(progress: dict | None, stage: str | None = None) -> str:
    """'pretrain · epoch 2/5 · step 40/100 · loss 1.234 · 3.1 step/s · ~19 s left', or 'progress unknown'."""
    if not progress or "step" not in progress:
        return "progress unknown"
    parts = []
    if progress.get("phase") and progress["phase"] != stage:  # a grid point's name; a stage's own name is shown
        parts.append(str(progress["phase"]))
    if progress.get("points"):
        parts.append(f"point {progress.get('point', '?')}/{progress['points']}")
    elif progress.get("epochs", 0) > 1:
        parts.append(f"epoch {progress.get('epoch', '?')}/{progress['epochs']}")
    parts.append(f"step {progress['step']}/{progress.get('steps', '?')}")
    if isinstance(progress.get("loss"), (int, float)):
        parts.append(f"loss {progress['loss']:.3f}")
    if progress.get("rate"):
        parts.append(f"{progress['rate']:.1f} step/s")
    left = seconds_left(progress)
    if left is not None:
        parts.append(f"~{duration(left)} left")
    return " · ".join(parts)


def counts(rows: list[dict]) -> str:
    order = [contract.DONE, REUSED, contract.RUNNING, contract.PENDING, contract.FAILED, contract.DIVERGED, DIED,
             "not run", "cancelled"]
    n: dict[str, int] = {}
    for r in rows:
        n[r["status"]] = n.get(r["status"], 0) + 1
    shown = [f"{n[s]} {s}" for s in order if n.get(s)] + [f"{v} {s}" for s, v in n.items() if s not in order]
    return f"{len(rows)} stages: " + ", ".join(shown)


def detail(row: dict) -> str:
    if row["status"] == contract.RUNNING:
        return progress_text(row.get("progress"), row["stage"])
    if row["status"] in ENDED - {contract.DONE} or (row["status"] == contract.PENDING and row.get("error")):
        return str(row.get("error") or "")
    return ""


def snapshot(exp_dir: str | Path, reused: set[str] = frozenset()) -> list[dict]:
    rows = stage_rows(exp_dir)
    for r in rows:
        if r["status"] == contract.DONE and r["stage"] in reused:
            r["status"] = REUSED
        if r["status"] == contract.RUNNING:
            r["progress"] = read_progress(r["dir"])
    return rows


def finished(rows: list[dict]) -> bool:
    return all(r["status"] in ENDED or r["status"] == REUSED for r in rows)


class LiveView:
    """update() after each poll of the jobs; close() when they have ended."""

    def __init__(self, exp_dir: str | Path, stream: TextIO | None = None, interactive: bool | None = None,
                 reused: set[str] = frozenset()):
        self.exp_dir, self.stream, self.reused = Path(exp_dir), stream or sys.stdout, set(reused)
        if interactive is None:
            interactive = self.stream.isatty() and shutil.get_terminal_size().columns >= MIN_TABLE_WIDTH
        self.interactive, self.enabled = interactive, True
        self.seen: dict[str, str] = {}
        self.said_progress: dict[str, float] = {}
        self.live = None

    def update(self) -> list[dict] | None:
        if not self.enabled:
            return None
        try:
            rows = snapshot(self.exp_dir, self.reused)
        except Exception:  # a plan or status being rewritten, a SLURM query failing for a moment: next poll
            return None
        try:
            self._live(rows) if self.interactive else self._plain(rows)
        except Exception:
            self._stop_live()
            self.enabled = not self.interactive  # a broken terminal view falls back to lines; broken lines stop
            self.interactive = False
        return rows

    def close(self) -> None:
        self.update()
        self._stop_live()

    # -- plain lines
    def _say(self, text: str) -> None:
        print(f"trd: {time.strftime('%H:%M:%S')} {text}", file=self.stream, flush=True)

    def _plain(self, rows: list[dict]) -> None:
        first = not self.seen
        if first:
            self._say(counts(rows))
        now = time.monotonic()
        for r in rows:
            name, status = r["stage"], r["status"]
            if self.seen.get(name) != status:
                if not first or status not in (contract.PENDING, REUSED):
                    extra = detail(r) if status != contract.RUNNING else ""
                    self._say(f"{name}: {status}" + (f" ({extra})" if extra else ""))
                self.seen[name] = status
                self.said_progress[name] = now
            elif status == contract.RUNNING and now - self.said_progress.get(name, now) >= PLAIN_PROGRESS_EVERY_S:
                self._say(f"{name}: {progress_text(r.get('progress'), name)}")
                self.said_progress[name] = now

    # -- the terminal view
    def _table(self, rows: list[dict]):
        from rich.table import Table

        table = Table(title=counts(rows), title_justify="left", box=None, pad_edge=False, expand=False)
        table.add_column("stage", no_wrap=True, overflow="ellipsis", max_width=48)
        table.add_column("kind", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("progress / note", overflow="ellipsis", no_wrap=True)
        style = {contract.DONE: "green", REUSED: "dim green", contract.RUNNING: "bold cyan",
                 contract.FAILED: "bold red", contract.DIVERGED: "bold red", DIED: "bold red"}
        for r in rows:
            table.add_row(r["stage"], r["kind"], f"[{style.get(r['status'], '')}]{r['status']}[/]" if r["status"] in style
                          else r["status"], detail(r))
        return table

    def _live(self, rows: list[dict]) -> None:
        if self.live is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream)
            self.live = Live(self._table(rows), console=console, auto_refresh=False, transient=False,
                             vertical_overflow="ellipsis")
            self.live.start()
        self.live.update(self._table(rows), refresh=True)

    def _stop_live(self) -> None:
        if self.live is not None:
            try:
                self.live.stop()
            except Exception:
                pass
            self.live = None


def watch(exp_dir: str | Path, interval_s: float = 2.0, stream: TextIO | None = None,
          interactive: bool | None = None) -> list[dict]:
    """The view until every stage has ended; Ctrl-C stops the watching only (the jobs go on)."""
    view = LiveView(exp_dir, stream, interactive)
    rows = None
    try:
        while True:
            rows = view.update() or rows
            if rows is not None and finished(rows):
                break
            time.sleep(interval_s)
    finally:
        view._stop_live()
    return rows or snapshot(exp_dir)
