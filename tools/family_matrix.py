#!/usr/bin/env python3
"""Every recipe row on every backbone family and layout: the family x layout x recipe matrix.

A tiny random-init model of each family and layout (``s3brain.backbone.tiny_models``: wav2vec2,
HuBERT and WavLM in the base and the large layout, data2vec-audio in its one layout) is written with
``save_pretrained``, as a downloaded hub folder is, and passed as ``--ssl_hub`` to every row of
``tests/recipes/*.csv`` in its debug configuration (SSL pretraining left out). Each run ends one of
three ways: ``ok``; ``refused``, when the recipe stopped before training with its one-line
``ERROR:`` (exit status 2) because the row cannot work on that backbone; or a failure. Prints the
matrix (rows passed, refused, failed per model) and every refusal and failure with its line, and
writes them as a record (``--record``) from which ``tools/docs.py`` makes the README's table.

    ./s3env python tools/family_matrix.py --jobs 2
    ./s3env python tools/family_matrix.py --models wavlm-large --only weight_ft early_exit
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from recipe_rows import REPO, index_rows, markdown, prerequisites, run_row

from s3brain.backbone.tiny_models import FAMILY_LAYOUTS, write_tiny_model

RECORD = REPO / "tools" / "records" / "family_matrix.json"


def outcome(result):
    """``ok``, ``refused`` (exit 2 with a one-line ``ERROR:``) or ``failed``."""
    if result["status"] == "ok":
        return "ok"
    if result["status"] == "exit 2" and result["error"].startswith("ERROR:"):
        return "refused"
    return "failed"


def summarize(runs):
    """One table row per model: rows passed, refused and failed, set-up runs that passed."""
    table = []
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model and not r["row"].startswith("(")]
        setup = [r for r in runs if r["model"] == model and r["row"].startswith("(")]
        counts = {k: sum(r["outcome"] == k for r in mine) for k in ("ok", "refused", "failed")}
        table.append({"model": model, "rows": len(mine), "passed": counts["ok"],
                      "refused": counts["refused"], "failed": counts["failed"],
                      "set-up runs ok": f"{sum(r['outcome'] == 'ok' for r in setup)} / "
                                        f"{len(setup)}"})
    return table


def summary_markdown(record):
    """The README's table: the per-model counts, then every refusal and failure with its line."""
    runs = record["runs"]
    text = markdown(summarize(runs), ["model", "rows", "passed", "refused", "failed",
                                      "set-up runs ok"])
    others = [r for r in runs if r["outcome"] != "ok"]
    if others:
        text += "\n\n" + markdown(others, ["model", "row", "outcome", "error"])
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    keys = [f"{family}-{layout}" for family, layout in FAMILY_LAYOUTS]
    parser.add_argument("--models", nargs="*", choices=keys, default=keys)
    parser.add_argument("--only", nargs="*", help="row names to run (weight_ft, SUPERB/KS/...)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once (each gets cores / jobs threads)")
    parser.add_argument("--work", type=Path, default=None, help="folder for models, runs, logs")
    parser.add_argument("--record", type=Path, default=None,
                        help=f"write the runs as JSON here (the README's: {RECORD.relative_to(REPO)}"
                             "; written only for a whole matrix unless given)")
    args = parser.parse_args(argv)
    if args.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    work = args.work or Path(tempfile.mkdtemp(prefix="family_matrix_"))
    rows = index_rows(only=args.only)
    start = time.perf_counter()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,  # the code run
                            capture_output=True, text=True, check=False).stdout.strip()

    for key in args.models:  # in this thread: transformers' lazy imports are not thread-safe
        family, layout = key.rsplit("-", 1)
        (work / key).mkdir(parents=True, exist_ok=True)
        if not (work / key / "model" / "config.json").exists():
            write_tiny_model(work / key / "model", family, layout)

    def one_model(key):
        base = work / key
        hub = base / "model"
        extra = [f"--ssl_hub={hub}"]
        earlier, done = prerequisites(base, extra, args.timeout)
        return key, base, extra, earlier, done

    runs = []
    with ThreadPoolExecutor(args.jobs) as pool:
        setups = {}
        for key, base, extra, earlier, done in pool.map(one_model, args.models):
            setups[key] = (base, extra, earlier)
            runs += [{"model": key, **r} for r in done]
        jobs = [(key, row) for key in args.models for row in rows]

        def one(job):
            key, row = job
            base, extra, earlier = setups[key]
            result = {"model": key, **run_row(row, base, extra, earlier, args.timeout)}
            print(f"{key} {result['row']}: {result['status']} ({result['seconds']} s)",
                  flush=True)
            return result

        runs += list(pool.map(one, jobs))
    for r in runs:
        r["outcome"] = outcome(r)
    given = list(argv or sys.argv[1:])
    if "--work" in given:  # a machine path: not for the record
        del given[given.index("--work"):given.index("--work") + 2]
    record = {"command": "./s3env python tools/family_matrix.py " + " ".join(given),
              "date": datetime.date.today().isoformat(), "code": commit,
              "minutes": round((time.perf_counter() - start) / 60, 1),
              "jobs": args.jobs, "runs": [{k: r[k] for k in ("model", "row", "outcome",
                                                             "seconds", "error")} for r in runs]}
    whole = args.only is None and args.models == keys
    path = args.record or (RECORD if whole else None)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"Record: {path}")
    print(summary_markdown(record))
    print(f"\nRuns and logs in {work}")
    return 1 if any(r["outcome"] == "failed" for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
