#!/usr/bin/env python3
"""The SUPERB-like recipes' strategies side by side, one study per task (keyword spotting,
intent classification, speaker identification, prosody), three seeds, on the recipes' defaults
(the embedded corpus's task folders, the default backbone): test accuracy, FLOPs, CPU latency,
bytes per task, and each strategy's paired intervals against weight fine-tuning. The SUPERB
README's Results tables and Pareto plots are made from these records.

    ./s3env python studies/superb_comparison/superb_comparison.py          # from records
    ./s3env python studies/superb_comparison/superb_comparison.py --run --jobs 2

Each task is a ``s3brain.compare.study.RecipeStudy`` in its own folder (``<task>/study.json``,
``<task>/records/``); without ``--run`` nothing trains and every task's tables and plot are made
again from its records in seconds. With ``--run`` the tasks' runs are trained in
``--out/<task>`` (finished runs are reused), then recorded.
"""

import argparse
import sys
from pathlib import Path

from s3brain.compare.records import size_of
from s3brain.compare.study import REPO, RecipeStudy

FOLDER = Path(__file__).resolve().parent
#: The task studies, in the README's order.
TASKS = {task: RecipeStudy(FOLDER / task) for task in ("KS", "IC", "SID", "PR")
         if (FOLDER / task / "study.json").exists()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="train the runs (hours), then record")
    parser.add_argument("--out", type=Path, default=REPO / "results" / FOLDER.name,
                        help="where --run trains (a folder per task)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args(argv)
    for task in args.tasks:
        study = TASKS[task]
        if args.run:
            written = study.run(args.out / task, args.jobs)
            print(f"{task}: {len(written)} records, {size_of(study.records) / 1e3:.0f} kB")
        print(f"## {task}\n\n{study.results_table(study.rows())}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
