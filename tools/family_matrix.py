#!/usr/bin/env python3
"""Every recipe row on every backbone family and layout: the family x layout x recipe matrix.

A tiny random-init model of each family and layout (``s3brain.backbone.tiny_models``: wav2vec2,
HuBERT and WavLM in the base and the large layout, data2vec-audio in its one layout) is written with
``save_pretrained``, as a downloaded hub folder is, and passed as ``--ssl_hub`` to every row of
``tests/recipes/*.csv`` in its debug configuration (SSL pretraining left out). Prints the matrix
(rows that passed per model) and the failures with their last error line. About 40 minutes of
one core for the 7 models x 30 rows; ``--models`` and ``--only`` take a part.

    ./s3env python tools/family_matrix.py
    ./s3env python tools/family_matrix.py --models wavlm-large --only weight_ft early_exit
"""

import argparse
import sys
import tempfile
from pathlib import Path

from recipe_rows import index_rows, markdown, prerequisites, run_row

from s3brain.backbone.tiny_models import FAMILY_LAYOUTS, write_tiny_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    keys = [f"{family}-{layout}" for family, layout in FAMILY_LAYOUTS]
    parser.add_argument("--models", nargs="*", choices=keys, default=keys)
    parser.add_argument("--only", nargs="*", help="row names to run (weight_ft, SUPERB/KS/...)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run")
    parser.add_argument("--work", type=Path, default=None, help="folder for models, runs, logs")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="family_matrix_"))
    rows = index_rows(only=args.only)
    summary, failures = [], []
    for key in args.models:
        family, layout = key.rsplit("-", 1)
        base = work / key
        base.mkdir(parents=True, exist_ok=True)
        hub = base / "model"
        if not (hub / "config.json").exists():
            write_tiny_model(hub, family, layout)
        extra = [f"--ssl_hub={hub}"]
        earlier, done = prerequisites(base, extra, args.timeout)
        for row in rows:
            done.append(run_row(row, base, extra, earlier, args.timeout))
            print(f"{key} {done[-1]['row']}: {done[-1]['status']} ({done[-1]['seconds']} s)",
                  flush=True)
        ran = [r for r in done if not r["row"].startswith("(")]
        summary.append({"model": key, "rows passed": f"{sum(r['status'] == 'ok' for r in ran)}"
                        f" / {len(ran)}", "set-up runs ok": sum(r["status"] == "ok" for r in
                                                              done if r["row"].startswith("("))})
        failures += [{"model": key, **r} for r in done if r["status"] != "ok"]
    print(markdown(summary, ["model", "rows passed", "set-up runs ok"]))
    if failures:
        print("\nFailures:\n" + markdown(failures, ["model", "row", "status", "error"]))
    print(f"\nRuns and logs in {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
