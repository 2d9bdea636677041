#!/usr/bin/env python3
"""The ``performance_check`` entry of every row of ``tests/recipes/*.csv``, from known-good runs.

Each row's ``test_debug_checks`` carries SpeechBrain's
``performance_check=[file, variable, threshold, epoch: N]`` (see ``tests/recipes/README.md``).
This script runs every row as SpeechBrain's recipe-test runner does (the row's flags, which
include ``--debug``, and ``--device=cpu``, from a folder where ``tests/tmp/`` is fresh, in the
runner's order, so that rows starting from earlier rows find them), reads each row's figure the
way the check reads it (``tests/conftest.py``) and sets the threshold ``MARGIN`` away from it, on
the side that would mean a worse run: a loss, a kept share or a storage share may grow by 3 %,
a sparsity may fall by 3 %.

    python tools/performance_checks.py                    # run the rows, print the entries
    python tools/performance_checks.py --write            # ... and write them into the CSVs
    python tools/performance_checks.py --work /tmp/pc     # keep the runs (default: a temp folder)
    python tools/performance_checks.py --from /tmp/pc --write   # read runs made before
    python tools/performance_checks.py --only LibriSpeech_weight_ft LibriSpeech_omp

Rows are named by their output folder (``--output_folder=tests/tmp/<name>``). A row that starts
from another (``--init_from=tests/tmp/LibriSpeech_weight_ft``) needs that one run first: with
``--only``, name both. All rows take about 20 minutes on 2 CPU cores.
"""

import argparse
import csv
import io
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INDEX = REPO / "tests" / "recipes"
sys.path.insert(0, str(REPO / "tests"))
from conftest import PerformanceCheck, parse_performance_check, performance_value  # noqa: E402

#: how far from the known-good value a threshold lies (its side: the ``direction`` of a figure)
MARGIN = 0.03

# What a row checks: (file, variable, direction, line). A results.json key is read from its own
# line, selected by a string that ends in ": <integer>" as the check's line field must
# ('"key": 0' is in '"key": 0.5,'), and quoted as the file quotes it.
LOSS = ("train_log.txt", "train loss", "<=", "epoch: 2")
KEPT_SHARE = ("train_log.txt", "valid kept_share", "<=", "epoch: 2")
SPARSITY = ("results.json", '"sparsity_linear"', ">=", '"sparsity_linear": 0')
STORAGE = ("results.json", '"storage_share_of_backbone"', "<=", '"storage_share_of_backbone": 0')
BACKBONE_FLOPS = ("results.json", '"backbone_flops_ratio"', "<=", '"backbone_flops_ratio": 0')

#: rows whose train loss cannot tell whether the strategy works, by output folder name, and the
#: figure the strategy exists for; every other row checks its train loss at the last epoch
FIGURES = {
    # masks or add-ons on a frozen backbone: in 2 debug epochs the backbone's first steps are
    # frozen (LibriSpeech s3router, top_blocks) or the head dominates the loss (SUPERB), so the
    # loss equals weight_ft's; the bytes one more task costs, as a share of the backbone
    **{name: STORAGE for name in (
        "LibriSpeech_s3router", "LibriSpeech_top_blocks", "CommonVoice_s3router",
        *(f"SUPERB_{task}_{stem}" for task in ("KS", "SID", "IC", "PR")
          for stem in ("s3router", "lora", "adapter")))},
    # unstructured pruning: the share of zero weights in the deployed linear layers
    **{f"LibriSpeech_{stem}": SPARSITY for stem in ("omp", "imp", "parp", "s3router_p")},
    # structured pruning (and SAFARI within S6-DAMON): the shrunk model's share of the backbone
    **{f"LibriSpeech_{stem}": STORAGE
       for stem in ("omp_structured", "parp_structured", "safari", "s6damon")},
    # pruning to a FLOPs budget: the shrunk backbone's counted FLOPs over the dense one's
    "LibriSpeech_budget_pruning": BACKBONE_FLOPS,
    # fewer frames through the blocks: the share of token-block products kept
    **{name: KEPT_SHARE for name in (
        "LibriSpeech_salad", "CommonVoice_salad", "LibriSpeech_skip_uniform",
        "LibriSpeech_skip_random", "LibriSpeech_skip_adaptive", "LibriSpeech_token_merging")},
}


def rows():
    """``[(csv path, row index, recipe id, name, row)]`` in the order of SpeechBrain's runner
    (``<Dataset>_row_<NN>``, sorted)."""
    found = []
    for path in sorted(INDEX.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f, skipinitialspace=True)):
                folder = re.search(r"--output_folder=(\S+)", row["test_debug_flags"]).group(1)
                found.append((path, i, f"{path.stem}_row_{i + 2:02d}", Path(folder).name, row))
    return sorted(found, key=lambda r: r[2])


def run_row(row, work):
    """Run one row as SpeechBrain's runner would (its flags, ``--device=cpu``) from ``work``;
    return the exit status and the seconds taken."""
    flags = shlex.split(row["test_debug_flags"])
    if "--debug" not in flags:
        raise SystemExit(f"{row['Hparam_file']}: a row with a performance check runs without "
                         "--debug upstream unless its flags give it: add --debug")
    out = work / re.search(r"--output_folder=(\S+)", row["test_debug_flags"]).group(1)
    out.mkdir(parents=True, exist_ok=True)
    script = row["Script_file"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(work / os.path.dirname(script))}
    start = time.perf_counter()
    with open(out / "stdout.txt", "w") as stdout, open(out / "stderr.txt", "w") as stderr:
        code = subprocess.run([sys.executable, script, row["Hparam_file"], *flags,
                               "--device=cpu"], cwd=work, env=env, stdout=stdout,
                              stderr=stderr).returncode
    return code, time.perf_counter() - start


def threshold(value, direction):
    """``value`` moved by ``MARGIN`` to the worse side, rounded outwards to 3 significant digits.

    Example
    -------
    >>> threshold(4.23, "<="), threshold(0.5, ">="), threshold(0.047, "<=")
    ('<=4.36', '>=0.485', '<=0.0485')
    """
    bound = value * (1 + MARGIN) if direction == "<=" else value * (1 - MARGIN)
    scale = 10 ** (2 - math.floor(math.log10(abs(bound))))
    rounded = (math.ceil if direction == "<=" else math.floor)(round(bound * scale, 6)) / scale
    return f"{direction}{rounded:.{max(0, 2 - math.floor(math.log10(abs(rounded))))}f}"


def entry(name, folder):
    """The row's ``performance_check`` entry from its known-good run in ``folder``, and the
    value read there."""
    file, variable, direction, line = FIGURES.get(name, LOSS)
    value = performance_value(PerformanceCheck(file, variable, "", line), folder)
    return (f"performance_check=[{file}, {variable}, {threshold(value, direction)}, {line}]",
            value)


def with_entry(checks, new):
    """``test_debug_checks`` with its performance check replaced by (or added as) ``new``."""
    kept = re.sub(r",?performance_check=\[.*?\]", "", checks)
    return f"{kept},{new}" if kept else new


def write(updates):
    """Set the entries ``{(csv path, row index): entry}`` in the CSVs, every other field and
    the files' quoting unchanged."""
    for path in sorted({p for p, _ in updates}):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields, table = reader.fieldnames, list(reader)
        for (p, i), new in updates.items():
            if p == path:
                table[i]["test_debug_checks"] = with_entry(table[i]["test_debug_checks"], new)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
        path.write_text(text.getvalue(), encoding="utf-8")


def main(argv=None):
    """Run (or read) the rows, print their entries, optionally write them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="folder for the runs (kept)")
    parser.add_argument("--from", dest="done", type=Path,
                        help="read the runs under this folder (its tests/tmp/<name> or <name>)")
    parser.add_argument("--only", nargs="+", help="row names (output folder names)")
    parser.add_argument("--write", action="store_true", help="write the entries into the CSVs")
    args = parser.parse_args(argv)
    selected = [r for r in rows() if not args.only or r[3] in args.only]
    if args.done is None:
        work = args.work or Path(tempfile.mkdtemp(prefix="performance_checks."))
        work.mkdir(parents=True, exist_ok=True)
        for link in ("recipes", "s3brain"):
            if not (work / link).exists():
                (work / link).symlink_to(REPO / link)
        print(f"runs in {work}", flush=True)
    updates, failed = {}, []
    print("| row | recipe id | figure | known-good | entry |\n| --- | --- | --- | --- | --- |",
          flush=True)
    for path, i, recipe_id, name, row in selected:
        if args.done is None:
            code, seconds = run_row(row, work)
            folder = work / "tests" / "tmp" / name
            if code != 0:
                failed.append(f"{name}: exit {code} after {seconds:.0f} s, see {folder}")
                continue
        else:
            folder = next((f for f in (args.done / "tests" / "tmp" / name, args.done / name)
                           if f.is_dir()), args.done / name)
        try:
            new, value = entry(name, folder)
        except ValueError as err:
            failed.append(f"{name}: {err}")
            continue
        updates[(path, i)] = new
        check = parse_performance_check(new)
        print(f"| {name} | {recipe_id} | {check.variable} ({check.file}) | {value:g} | "
              f"`{new}` |", flush=True)
    for line in failed:
        print(line, file=sys.stderr)
    if args.write and updates:
        write(updates)
        print(f"wrote {len(updates)} entries into {INDEX}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
