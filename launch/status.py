"""Where an experiment stands:  python launch/status.py <experiment dir> [--watch [--interval S]]

Without --watch: every stage's state and accuracies, once; exit 1 if a stage failed, diverged or died.
With --watch: the live view of the submitting console until every stage has ended (Ctrl-C stops the
watching, not the jobs), then the closing summary.
"""
from __future__ import annotations

import argparse
import sys

from trd.console import watch
from trd.status import FAILED_STATES, format_status, stage_rows
from trd.summary import summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="the experiment directory (<out_root>/<name>)")
    parser.add_argument("--watch", action="store_true", help="follow the experiment until every stage has ended")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between looks (with --watch)")
    args = parser.parse_args(argv)
    try:
        if args.watch:
            try:
                rows = watch(args.experiment, args.interval)
            except KeyboardInterrupt:
                print("\ntrd: stopped watching; the jobs go on", file=sys.stderr)
                return 130
            print(summary(args.experiment, rows))
        else:
            rows = stage_rows(args.experiment)
            print(format_status(rows))
    except FileNotFoundError as err:
        print(f"trd: error: {err}", file=sys.stderr)
        return 2
    return 1 if any(r["status"] in FAILED_STATES for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
