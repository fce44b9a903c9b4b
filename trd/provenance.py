"""Which code a stage was planned and run with: the git commit of a checkout (and whether it had local
changes), or the installed package's version outside one."""
from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

import trd

_SOURCE = Path(trd.__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(_SOURCE), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    try:
        package = metadata.version("trd")
    except metadata.PackageNotFoundError:
        package = None
    version = {"trd": trd.__version__, "package": package}
    commit = _git("rev-parse", "HEAD") if (_SOURCE / ".git").exists() else None
    if commit:
        version["git_commit"] = commit
        version["git_dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no", "--", "trd"))
    return version
