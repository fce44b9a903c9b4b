"""What a run prints when its jobs have ended: the report's headline (per released model its target accuracy,
what the best-of-grid attacker gets from it and the disposal ratio against that attacker), where the report,
its tables and plots are, and TensorBoard's command; on failure, each failed stage's last error line and log,
and the command that runs what is not done."""
from __future__ import annotations

import shlex
from pathlib import Path

from trd import contract
from trd.console import counts
from trd.status import FAILED_STATES


def headline_text(exp_dir: Path) -> str | None:
    from trd.report import headline
    from trd.report.write import table_text

    try:
        table = headline(exp_dir)
    except Exception:  # a plan the report cannot read (an older format): the paths below still help
        return None
    return None if table is None else table_text(table)


def rerun_command(exp_dir: Path) -> str:
    try:
        return (exp_dir / contract.COMMAND_FILE).read_text().strip()
    except OSError:
        return f"python launch/submit.py <the overrides that planned {exp_dir}>"


def summary(exp_dir: str | Path, rows: list[dict]) -> str:
    from trd.report import REPORT_DIR

    exp_dir = Path(exp_dir)
    lines = [f"trd: finished, {counts(rows)}"]
    headline = headline_text(exp_dir)
    if headline:
        lines += ["", headline, ""]
    report = exp_dir / REPORT_DIR
    if (report / "report.md").is_file():
        lines.append(f"trd: report       {report / 'report.md'}")
        lines.append(f"trd: tables       {report}/*.csv")
        if any(report.glob("*.png")):
            lines.append(f"trd: plots        {report}/*.png")
    lines.append(f"trd: every stage  python launch/status.py {shlex.quote(str(exp_dir))}")
    lines.append(f"trd: TensorBoard  tensorboard --logdir {shlex.quote(str(exp_dir / contract.STAGE_LINKS))}")
    failed = [r for r in rows if r["status"] in FAILED_STATES]
    for r in failed:
        error = str(r.get("error") or "no error recorded").strip().splitlines()
        lines += [f"trd: {r['stage']} {r['status']}: {error[-1]}", f"     its log: {r['log']}"]
    not_run = [r["stage"] for r in rows if r["status"] in ("not run", "cancelled")]
    if not_run:
        lines.append(f"trd: not run (an input failed or the job was cancelled): {', '.join(not_run)}")
    if failed or not_run:
        lines.append(f"trd: to run only what is not done (finished stages are reused): {rerun_command(exp_dir)}")
    return "\n".join(lines)
