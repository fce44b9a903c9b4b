"""Where an experiment stands:  python launch/status.py <experiment dir>"""
from __future__ import annotations

import sys

from trd.status import format_status, stage_rows

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python launch/status.py <experiment dir>")
    rows = stage_rows(sys.argv[1])
    print(format_status(rows))
    sys.exit(1 if any(r["status"] in ("failed", "diverged", "died") for r in rows) else 0)
