#!/usr/bin/env python3
"""Does everything run on a GPU? One command, one table (about 8 minutes on one GPU).

1. Every LibriSpeech strategy's debug configuration (the rows of ``tests/recipes/LibriSpeech.csv``,
   run with ``--debug``) on CUDA, in fp32 and with bf16 autocast (SpeechBrain's
   ``--precision=bf16``). The rows that start from earlier runs get them from this check: a
   weight fine-tuning run with a real checkpoint (``--init_from``, the SALAD teacher) and a SALAD
   detector. Each row reports its exit status, wall time, whether ``results.json`` was written
   (the cost is measured on a CPU copy of the deployable model, after training on the GPU) and,
   if it failed, the last line of its error.
2. The S3-Router step-time benchmark (``benchmarks/mask_step_time.py --model base``) and the
   SAFARI speed-up benchmark (``benchmarks/safari_speedup.py``) at wav2vec2-base size on the GPU.

    python benchmarks/gpu_check.py                       # on a machine with a GPU
    python benchmarks/gpu_check.py --jobs 4 --out gpu_check.md
    python benchmarks/gpu_check.py --device cpu --only weight_ft s3router   # try it without one

Recipe runs go in parallel (``--jobs``); they share the GPU, and each is small.
"""

import argparse
import concurrent.futures
import csv
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INDEX = REPO / "tests" / "recipes" / "LibriSpeech.csv"
# Flags whose value is an earlier run of this check, and which run gives it.
NEEDS = {"--init_from=": "finetuned", "--teacher_from=": "finetuned",
         "--salad_detector=": "detector"}


def strategy_rows(only=None):
    """``(name, script, hparams, flags)`` of every LibriSpeech fine-tuning row of the index."""
    rows = []
    with open(INDEX, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            hparams = Path(row["Hparam_file"])
            if "pretrain" in hparams.parts:  # SSL pretraining is not a fine-tuning strategy
                continue
            name = hparams.stem if hparams.parent.name == "hparams" else \
                f"{hparams.parent.name}_{hparams.stem}"
            if only and name not in only:
                continue
            flags = [f for f in shlex.split(row["test_debug_flags"])
                     if not f.startswith("--output_folder")]
            rows.append((name, REPO / row["Script_file"], REPO / hparams, flags))
    return rows


def run(cmd, log, timeout):
    """Run ``cmd``, its output to ``log``; returns ``(exit status, seconds)``."""
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        try:
            code = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return code, time.perf_counter() - start


def last_error(log):
    """The last line of a run's output that names an error."""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()]
    errors = [line for line in lines if "Error" in line or line.startswith("ERROR")]
    return (errors or lines or [""])[-1][:160]


def recipe_row(row, precision, device, work, earlier, timeout):
    """One strategy's debug run; a dict for the table."""
    name, script, hparams, flags = row
    flags = list(flags)
    for prefix, which in NEEDS.items():
        flags = [f"{prefix}{earlier[which]}" if f.startswith(prefix) else f for f in flags]
    out = work / f"{name}_{precision}"
    cmd = [sys.executable, str(script), str(hparams), "--debug", *flags, f"--device={device}",
           f"--precision={precision}", f"--output_folder={out}"]
    code, seconds = run(cmd, work / f"{name}_{precision}.log", timeout)
    results = (out / "results.json").exists()
    return {"strategy": name, "precision": precision, "status": "ok" if code == 0 else
            f"exit {code}", "seconds": round(seconds, 1), "results.json": "yes" if results
            else "no", "error": "" if code == 0 else last_error(work / f"{name}_{precision}.log")}


def prerequisites(rows, precision, device, work, timeout):
    """The runs other rows start from: weight fine-tuning with a kept checkpoint (debug runs keep
    none) and a SALAD detector trained with it as the teacher."""
    by_name = {r[0]: r for r in rows}
    earlier = {"finetuned": work / f"finetuned_{precision}", "detector": None}
    base = [f for f in by_name.get("weight_ft", strategy_rows(["weight_ft"])[0])[3]
            if not f.startswith("--number_of_epochs")]
    cmd = [sys.executable, str(REPO / "recipes/LibriSpeech/train.py"),
           str(REPO / "recipes/LibriSpeech/hparams/weight_ft.yaml"), *base, "--number_of_epochs=1",
           "--lm_decoding=False", f"--device={device}", f"--precision={precision}",
           f"--output_folder={earlier['finetuned']}"]
    log = work / f"finetuned_{precision}.log"
    status = {"finetuned": (*run(cmd, log, timeout), log)}
    detector = by_name.get("salad_detector") or strategy_rows(["salad_detector"])[0]
    earlier["detector"] = work / f"salad_detector_{precision}"
    name, script, hparams, flags = detector
    flags = [f"--teacher_from={earlier['finetuned']}" if f.startswith("--teacher_from") else f
             for f in flags]
    cmd = [sys.executable, str(script), str(hparams), *flags, f"--device={device}",
           f"--precision={precision}", f"--output_folder={earlier['detector']}"]
    log = work / f"salad_detector_full_{precision}.log"
    status["detector"] = (*run(cmd, log, timeout), log)
    return earlier, status


def benchmark(cmd, log, timeout):
    """Run a benchmark script; its printed table, or the error."""
    code, seconds = run([sys.executable, *cmd], log, timeout)
    text = Path(log).read_text(errors="replace")
    return code, seconds, text if code == 0 else last_error(log)


def markdown(rows, columns):
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--only", nargs="*", help="strategy names (yaml stems) to run")
    parser.add_argument("--jobs", type=int, default=4, help="recipe runs at once")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per run")
    parser.add_argument("--no-benchmarks", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="folder for runs and logs")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); "
              "use --device cpu to try the check without one", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [r for r in strategy_rows(args.only) if r[0] != "salad_detector"]
    device_name = (torch.cuda.get_device_name(torch.device(args.device))
                   if args.device.startswith("cuda") else "CPU")
    report = [f"# GPU check on {device_name} ({args.device}), torch {torch.__version__}", ""]
    table, started = [], time.perf_counter()
    for precision in args.precisions:
        earlier, status = prerequisites(rows, precision, args.device, work, args.timeout)
        for which, (code, seconds, log) in status.items():
            table.append({"strategy": f"({which}, for the rows that start from it)",
                          "precision": precision, "status": "ok" if code == 0 else f"exit {code}",
                          "seconds": round(seconds, 1), "results.json": "",
                          "error": "" if code == 0 else last_error(log)})
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            table += list(pool.map(lambda r: recipe_row(r, precision, args.device, work, earlier,
                                                        args.timeout), rows))
        print(f"{precision}: {sum(r['status'] == 'ok' for r in table if r['precision'] == precision)}"
              f" of {sum(r['precision'] == precision for r in table)} ok", flush=True)
    columns = ["strategy", "precision", "status", "seconds", "results.json", "error"]
    report += ["## Recipe debug runs", "", markdown(table, columns), ""]
    if not args.no_benchmarks:
        for title, cmd in (
                ("S3-Router step time, wav2vec2-base size",
                 [str(REPO / "benchmarks/mask_step_time.py"), "--model", "base", "--device",
                  args.device]),
                ("SAFARI speed-up, wav2vec2-base size",
                 [str(REPO / "benchmarks/safari_speedup.py"), "--device", args.device])):
            code, seconds, text = benchmark(cmd, work / f"{Path(cmd[0]).stem}.log", args.timeout)
            report += [f"## {title} ({seconds:.0f} s{'' if code == 0 else f', exit {code}'})", "",
                       "```", text.strip(), "```", ""]
    report.append(f"Total {time.perf_counter() - started:.0f} s; runs and logs in {work}")
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    failed = [r for r in table if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
