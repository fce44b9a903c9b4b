"""Report of an experiment:  python launch/report.py outputs/demo [--paper-scheme finetune]

Writes <experiment dir>/report/ (report.md, a CSV per table naming the metrics.json of every cell, PNG
figures) from plan.json and the stages' metrics.json. The experiment's `report` stage does the same as its
last job; run this by hand when that stage did not run (an input stage failed) or to look at a running one.
"""
from __future__ import annotations

import sys

from trd.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
