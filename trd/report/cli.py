"""python launch/report.py <experiment dir> [--paper-scheme NAME] [--reference METHOD]: (re)writes <experiment dir>/report/."""
from __future__ import annotations

import argparse
import sys

from trd.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch/report.py", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("exp_dir", help="experiment directory (<out_root>/<name>, with plan.json)")
    parser.add_argument("--paper-scheme", default=None,
                        help="scheme whose acc_pl.final Table 1 uses (default: the experiment's piggyback.paper_scheme)")
    parser.add_argument("--reference", default=None,
                        help="method of the reference row (default: the experiment's report.reference, tl)")
    args = parser.parse_args(argv)
    try:
        summary = write_report(args.exp_dir, args.paper_scheme, args.reference)
    except (FileNotFoundError, ValueError) as err:
        print(f"trd: error: {err}", file=sys.stderr)
        return 2
    print(open(summary["markdown"]).read())
    print(f"trd: report in {summary['dir']}")
    return 0
