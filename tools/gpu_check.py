#!/usr/bin/env python3
"""Does everything run on a GPU? One command, one table (about 8 minutes on one GPU).

1. Every LibriSpeech strategy's debug configuration (the rows of ``tests/recipes/LibriSpeech.csv``,
   run with ``--debug``) on CUDA, in fp32 and with bf16 autocast (SpeechBrain's
   ``--precision=bf16``). Rows that start from earlier runs get them from this check (a weight
   fine-tuning run with a checkpoint, a SALAD detector), made on the GPU too. Each row reports
   its exit status, wall time, whether ``results.json`` was written (the cost is measured on a
   CPU copy of the deployable model, after training on the GPU) and, if it failed, the last
   line of its error.
2. The S3-Router step-time benchmark (``mask_step_time.py --model base``) and the SAFARI
   speed-up benchmark (``safari_speedup.py``) at wav2vec2-base size on the GPU.

    python tools/gpu_check.py                       # on a machine with a GPU
    python tools/gpu_check.py --jobs 4 --out gpu_check.md
    python tools/gpu_check.py --device cpu --precisions bf16 --no-benchmarks  # without one

Recipe runs go in parallel (``--jobs``); they share the GPU, and each is small.
"""

import argparse
import concurrent.futures
import sys
import tempfile
import time
from pathlib import Path

from recipe_rows import REPO, index_rows, markdown, prerequisites, run, run_row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--only", nargs="*", help="row names (yaml stems) to run")
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
    rows = index_rows(["LibriSpeech"], args.only)
    device_name = (torch.cuda.get_device_name(torch.device(args.device))
                   if args.device.startswith("cuda") else "CPU")
    report = [f"# GPU check on {device_name} ({args.device}), torch {torch.__version__}", ""]
    table, started = [], time.perf_counter()
    for precision in args.precisions:
        extra, tag = [f"--device={args.device}", f"--precision={precision}"], f"_{precision}"
        earlier, done = prerequisites(work, extra, args.timeout, tag)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            done += pool.map(lambda r: run_row(r, work, extra, earlier, args.timeout, tag), rows)
        table += [{**r, "precision": precision} for r in done]
        print(f"{precision}: {sum(r['status'] == 'ok' for r in done)} of {len(done)} ok",
              flush=True)
    columns = ["row", "precision", "status", "seconds", "results.json", "error"]
    report += ["## Recipe debug runs", "", markdown(table, columns), ""]
    if not args.no_benchmarks:
        for title, cmd in (
                ("S3-Router step time, wav2vec2-base size",
                 [REPO / "benchmarks/mask_step_time.py", "--model", "base", "--device",
                  args.device]),
                ("SAFARI speed-up, wav2vec2-base size",
                 [REPO / "benchmarks/safari_speedup.py", "--device", args.device])):
            log = work / f"{Path(cmd[0]).stem}.log"
            code, seconds = run([sys.executable, *cmd], log, args.timeout)
            text = log.read_text(errors="replace").strip()
            report += [f"## {title} ({seconds:.0f} s{'' if code == 0 else f', exit {code}'})", "",
                       "```", text if code == 0 else text[-2000:], "```", ""]
    report.append(f"Total {time.perf_counter() - started:.0f} s; runs and logs in {work}")
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if any(r["status"] != "ok" for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
