#!/usr/bin/env python3
"""How long the README's first command takes for a newcomer: a fresh clone of the repository,
no virtual environment, no corpus; the command as the README gives it, timed from the clone to
its end. Writes the record the top README's first-command part is made from
(``tools/records/first_command.json``).

    ./s3env python tools/first_command.py                       # clone this checkout's HEAD
    ./s3env python tools/first_command.py --workdir /tmp/fc --note "nothing else ran"

The corpus goes to an empty folder (``S3BRAIN_DATA``), so its generation is part of the time;
``--keep`` leaves the clone and its run for a look afterwards. Run it on a quiet machine: what
else runs beside it is in the time.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tools" / "records" / "first_command.json"
#: The README's first command, run in the clone.
COMMAND = ["./s3env", "python", "recipes/LibriSpeech/train.py", "hparams/s3router.yaml"]
#: Where the command's run writes (the yaml's output folder: results/<strategy>/<seed>).
RUN = Path("results") / "s3router" / "1986"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ - (\S+) - \w+ - (.*)$")


def log_times(log):
    """``(corpus seconds, first log time, last log time)`` from the run's ``log.txt``: the
    corpus took from its ``Synthesising`` line to the next line of another logger (0 when the
    corpus was there already).

    Example
    -------
    >>> lines = ["2026-12-06 10:00:00,1 - s3brain.data.synthetic - INFO - Synthesising 9 utterances",
    ...          "2026-12-06 10:02:10,5 - librispeech_prepare - INFO - train: 9 utterances",
    ...          "2026-12-06 10:09:00,0 - __main__ - INFO - done"]
    >>> corpus, first, last = log_times(lines)
    >>> corpus, (last - first).seconds
    (130.0, 540)
    """
    stamps = [(datetime.datetime.fromisoformat(m.group(1)), m.group(2), m.group(3))
              for m in map(STAMP.match, log) if m]
    corpus = 0.0
    for i, (when, name, text) in enumerate(stamps):
        if text.startswith("Synthesising"):
            after = next((w for w, n, _ in stamps[i + 1:] if n != name), stamps[-1][0])
            corpus += (after - when).total_seconds()
    return corpus, stamps[0][0], stamps[-1][0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to clone (default: a new temporary folder)")
    parser.add_argument("--record", type=Path, default=RECORD)
    parser.add_argument("--note", default="nothing else ran on the machine",
                        help="what else ran beside it, for the record")
    parser.add_argument("--keep", action="store_true", help="leave the clone and its run")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="s3brain_first_"))
    work.mkdir(parents=True, exist_ok=True)
    clone, corpus = work / "fresh", work / "corpus"
    if clone.exists() or corpus.exists():
        parser.error(f"{work} already holds fresh/ or corpus/: give an empty --workdir")
    corpus.mkdir()
    code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "S3BRAIN_VENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(REPO)))
    env["S3BRAIN_DATA"] = str(corpus)
    start = time.monotonic()
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    with open(work / "first_command.log", "w") as log:
        status = subprocess.run(COMMAND, cwd=clone, env=env, stdout=log,
                                stderr=subprocess.STDOUT, check=False).returncode
    seconds = round(time.monotonic() - start)
    if status != 0:
        print(f"the command failed ({status}); its output: {work / 'first_command.log'}")
        return status
    run = clone / RUN
    results = json.loads((run / "results.json").read_text())
    corpus_seconds, _, _ = log_times((run / "log.txt").read_text().splitlines())
    record = {
        "command": "git clone <repo> fresh && cd fresh && " + " ".join(COMMAND),
        "date": datetime.date.today().isoformat(), "code": code,
        "machine": "the development machine; S3BRAIN_DATA pointing at an empty folder, so the "
                   "corpus is generated in the run",
        "seconds": seconds, "corpus_seconds": round(corpus_seconds),
        "train_seconds": round(results["train_seconds"], 1),
        "threads": os.cpu_count(),  # the recipe leaves torch's default: every core
        "wer_test_clean": results["wer_test_clean"],
        "wer_test_clean_lm": results["wer_test_clean_lm"],
        "note": args.note, "cores": os.cpu_count()}
    args.record.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
