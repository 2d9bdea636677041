"""The rows of ``tests/recipes/*.csv`` (SpeechBrain's recipe-test format) as runs, for the
tools that run many of them under one condition: ``gpu_check.py`` (on a GPU, fp32 and bf16)
and ``family_matrix.py`` (on a tiny model of every backbone family and layout).

Rows that start from earlier runs (``--init_from=``, ``--teacher_from=``, ``--salad_detector=``)
get them from ``prerequisites``: a weight fine-tuning run that keeps its checkpoint (debug runs
keep none) and a SALAD detector trained with it as the teacher, both under the same condition.
"""

import csv
import os
import shlex
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INDEX = REPO / "tests" / "recipes"
#: flag prefix -> the earlier run it names
NEEDS = {"--init_from=": "finetuned", "--teacher_from=": "finetuned",
         "--salad_detector=": "detector"}

Row = namedtuple("Row", "name dataset script hparams flags")


def index_rows(datasets=None, only=None):
    """The fine-tuning rows of the recipe index (SSL pretraining left out), in file order.

    Arguments
    ---------
    datasets : list of str, optional
        CSV stems to read (``LibriSpeech``, ``CommonVoice``, ``SUPERB``); all by default.
    only : list of str, optional
        Row names to keep (``weight_ft``, ``salad_detector``, ``SUPERB/KS/s3router``...).

    Returns
    -------
    list of Row
        ``name``, ``dataset``, ``script`` and ``hparams`` paths, debug ``flags`` without
        ``--output_folder``.
    """
    rows = []
    for path in sorted(INDEX.glob("*.csv")):
        if datasets and path.stem not in datasets:
            continue
        with open(path, encoding="utf-8") as f:
            for row in csv.DictReader(f):
                hparams = Path(row["Hparam_file"])
                if "pretrain" in hparams.parts:
                    continue
                name = hparams.stem if hparams.parent.name == "hparams" else \
                    f"{hparams.parent.name}_{hparams.stem}"
                if path.stem != "LibriSpeech":
                    task = Path(row["Script_file"]).parent.relative_to("recipes")
                    name = f"{task}/{name}"
                if only and name not in only:
                    continue
                flags = [f for f in shlex.split(row["test_debug_flags"])
                         if not f.startswith("--output_folder")]
                rows.append(Row(name, path.stem, REPO / row["Script_file"], REPO / hparams,
                                flags))
    return rows


def run(cmd, log, timeout):
    """Run ``cmd`` from the repository root, its output to ``log``.

    Returns
    -------
    tuple
        The exit status (``"timeout"`` if it ran past ``timeout`` seconds) and the seconds taken.
    """
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        try:
            code = subprocess.run([str(c) for c in cmd], cwd=REPO, stdout=out,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return code, time.perf_counter() - start


def last_error(log):
    """The last line of a run's output that names an error (or its last line)."""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()]
    errors = [line for line in lines if "Error" in line or line.startswith("ERROR")]
    return (errors or [line for line in lines if line] or [""])[-1][:200]


def _with_earlier(flags, earlier):
    for prefix, which in NEEDS.items():
        flags = [f"{prefix}{earlier[which]}" if f.startswith(prefix) else f for f in flags]
    return flags


def prerequisites(work, extra, timeout, tag=""):
    """The runs other rows start from, made with the flags ``extra``.

    Returns
    -------
    tuple
        ``{"finetuned": folder, "detector": folder}`` and one table row per run (its status).
    """
    earlier = {"finetuned": work / f"finetuned{tag}", "detector": work / f"salad_detector{tag}"}
    base = [f for f in index_rows(["LibriSpeech"], ["weight_ft"])[0].flags
            if not f.startswith("--number_of_epochs")]
    detector = index_rows(["LibriSpeech"], ["salad_detector"])[0]
    runs = {"finetuned": [sys.executable, REPO / "recipes/LibriSpeech/train.py",
                          REPO / "recipes/LibriSpeech/hparams/weight_ft.yaml", *base,
                          "--number_of_epochs=1", "--lm_decoding=False", *extra,
                          f"--output_folder={earlier['finetuned']}"],
            "detector": [sys.executable, detector.script, detector.hparams,
                         *_with_earlier(detector.flags, earlier), *extra,
                         f"--output_folder={earlier['detector']}"]}
    table = []
    for which, cmd in runs.items():
        log = work / f"{which}{tag}.log"
        code, seconds = run(cmd, log, timeout)
        table.append({"row": f"({which}, for the rows that start from it)", "status":
                      "ok" if code == 0 else f"exit {code}", "seconds": round(seconds, 1),
                      "results.json": "", "error": "" if code == 0 else last_error(log)})
    return earlier, table


def run_row(row, work, extra, earlier, timeout, tag=""):
    """One row in debug mode with the flags ``extra``; a table row (status, time, error)."""
    stem = row.name.replace("/", "_") + tag
    out, log = work / stem, work / f"{stem}.log"
    code, seconds = run([sys.executable, row.script, row.hparams, "--debug",
                         *_with_earlier(row.flags, earlier), *extra,
                         f"--output_folder={out}"], log, timeout)
    return {"row": row.name, "status": "ok" if code == 0 else f"exit {code}",
            "seconds": round(seconds, 1),
            "results.json": "yes" if (out / "results.json").exists() else "no",
            "error": "" if code == 0 else last_error(log)}


def markdown(rows, columns):
    """A Markdown table of ``rows`` (dicts) with ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
