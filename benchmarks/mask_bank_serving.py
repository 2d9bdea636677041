"""One backbone serving 4 S3-Router tasks (``s3brain.inference.interfaces.S3RouterASR``) against 4
separate exported models (``EncoderASR`` each): a batch of 4 utterances, one per task,
latency and memory side by side.

    python benchmarks/mask_bank_serving.py                      # 4 tiny runs, trained once
    python benchmarks/mask_bank_serving.py RUN1 RUN2 RUN3 RUN4  # finished S3-Router runs

Without run folders, four tiny LibriSpeech S3-Router runs (sparsity 0.1 to 0.4, same seed, so
the same backbone) are trained once into ``~/.cache/s3brain/mask_bank_runs/``. Each way of serving
runs in its own process, so that its memory is its own: load the models, then serve the mixed
batch ``--repeats`` times (median latency, one thread), in ``--rounds`` alternated rounds (the
best round's median kept). The bank
serves the batch with ``transcribe_batch(wavs, lens, tasks)`` (group by task, switch masks,
restore order); the separate models each transcribe their utterance. Both give the same
transcripts (checked).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = Path.home() / ".cache" / "s3brain" / "mask_bank_runs"
SPARSITIES = (0.1, 0.2, 0.3, 0.4)


def tiny_runs():
    """Four tiny S3-Router runs (trained once), as output folders."""
    folders = []
    for sparsity in SPARSITIES:
        out = RUNS / f"s3router_{sparsity}"
        if not (out / "task_mask.safetensors").exists():
            cmd = [sys.executable, str(REPO / "recipes" / "LibriSpeech" / "train.py"),
                   "hparams/s3router.yaml", "--synthetic_size=tiny", "--number_of_epochs=1",
                   "--cost_repeats=1", "--lm_decoding=False", f"--sparsity={sparsity}",
                   f"--output_folder={out}"]
            yaml_text = (REPO / "recipes" / "LibriSpeech" / "hparams" / "s3router.yaml").read_text()
            cmd += ["--int8_eval=False"] if "int8_eval:" in yaml_text else []
            subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
        folders.append(out)
    return folders


def utterances(runs):
    """One test utterance per task, cropped to the same length (no padding)."""
    import csv

    from s3brain.backbone.audio import read_audio

    signals = []
    for i, run in enumerate(runs):
        with open(Path(run) / "test-clean.csv", encoding="utf-8") as f:
            wav = [row["wav"] for row in csv.DictReader(f)][i]
        signals.append(read_audio(wav, 16000))
    length = min(len(s) for s in signals)
    return [s[:length] for s in signals]


def resident_mb():
    """The process's resident memory now (Linux ``/proc/self/status``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(way, runs, folder, repeats):
    """In this process: load the models one way, serve the batch; print the JSON result."""
    import torch

    torch.set_num_threads(1)
    signals = utterances(runs)
    batch, lens = torch.stack(signals), torch.ones(len(signals))
    from speechbrain.inference.ASR import EncoderASR
    from speechbrain.inference.interfaces import foreign_class

    import s3brain.deployment.export  # noqa: F401 (imports are not the models' memory)

    before = resident_mb()
    if way == "bank":
        asr = foreign_class(source=folder, pymodule_file="custom.py", classname="S3RouterASR",
                            savedir=tempfile.mkdtemp())
        tasks = list(asr.tasks)
        modules = [asr.mods.backbone, *asr.task_heads.values()]

        def run():
            return asr.transcribe_batch(batch, lens, tasks)[0]
    else:
        models = [EncoderASR.from_hparams(source=str(Path(f)), savedir=tempfile.mkdtemp())
                  for f in folder.split(",")]
        modules = [m.mods.encoder for m in models]

        def run():
            return [m.transcribe_batch(batch[i:i + 1], lens[:1])[0][0]
                    for i, m in enumerate(models)]
    words = run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    grown = resident_mb() - before
    params = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    buffers = sum(b.numel() * b.element_size() for m in modules for b in m.buffers())
    print(json.dumps({"way": way, "latency_ms": round(statistics.median(times), 1),
                      "model_mb": round((params + buffers) / 2 ** 20, 2),
                      "rss_growth_mb": round(grown, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                           / 1024, 1), "words": words}))


def main(argv=None):
    """Export the bank and the separate models, measure both ways in fresh processes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="4 finished S3-Router runs (same backbone)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=("bank", "separate"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    runs = [Path(r) for r in args.runs] or tiny_runs()
    if args.serve:
        return serve(args.serve, runs, args.folder, args.repeats)
    from s3brain.deployment.export import export_inference, export_mask_bank

    bank = export_mask_bank(runs, Path(tempfile.mkdtemp()) / "bank",
                            names=[f"task{i}" for i in range(len(runs))])
    separate = ",".join(str(export_inference(r, Path(tempfile.mkdtemp()) / "inference"))
                        for r in runs)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for _ in range(args.rounds):  # alternated, so that a busy machine slows both alike
        for way, folder in (("bank", str(bank)), ("separate", separate)):
            out = subprocess.run([sys.executable, __file__, *map(str, runs), "--serve", way,
                                  "--folder", folder, "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, env=env, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if way in results:  # the fastest round's latency
                result["latency_ms"] = min(result["latency_ms"], results[way]["latency_ms"])
            results[way] = result
    results = [results["bank"], results["separate"]]
    assert results[0]["words"] == results[1]["words"], "the bank and the models disagree"
    print(f"{len(runs)} tasks, a batch of one utterance per task "
          f"({len(utterances(runs)[0]) / 16000:.2f} s each), 1 thread, latency: the median of "
          f"{args.repeats}, the best of {args.rounds} alternated rounds")
    print(f"{'':24}{'latency ms':>11}{'tensors MiB':>13}{'RSS growth MiB':>16}"
          f"{'peak RSS MiB':>14}")
    for r in results:
        name = "mask bank (1 backbone)" if r["way"] == "bank" else f"{len(runs)} separate models"
        print(f"{name:24}{r['latency_ms']:>11}{r['model_mb']:>13}{r['rss_growth_mb']:>16}"
              f"{r['peak_rss_mb']:>14}")
    print("RSS growth: resident memory added by loading the models and serving the batch; "
          "peak RSS: the whole process (Python, torch and SpeechBrain included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
