#!/usr/bin/env python3
"""int8 on the CPU: torch against onnxruntime, side by side in one run.

The whole model (CNN feature extractor, transformer, a 29-output CTC head) on 10 s of audio,
batch 1: torch fp32, torch dynamic int8 (``torch.ao``), onnxruntime fp32 and onnxruntime dynamic
int8 (``s3brain.deployment.int8``: per-channel weight scales as deployed, and per-tensor); median
latency at each thread count, speed-up against torch fp32, and how far the int8 outputs are
from fp32's (largest difference over the logits' std, share of frames with the same arg-max).
Random weights: timing does not depend on them.

    ./s3env python benchmarks/int8_backends.py                     # wav2vec2-base size
    ./s3env python benchmarks/int8_backends.py --model tiny --threads 1 2

With ``--run``, a finished LibriSpeech run instead (read only: its manifests and its best
checkpoint, loaded into the recipe's yaml, ``weight_ft.yaml`` unless ``--hparams``): its deployed
model's fp32 and int8 latency (``s3brain.deployment.model.deployment_cost``) and test error rates,
batch 1 on the CPU (``s3brain.deployment.model.int8_error_rates``; fp32 scored by the same
function).

    ./s3env python benchmarks/int8_backends.py --run results/weight_ft/1986

With ``--cnn-int8 N`` as well, the int8 model is ``s3brain.deployment.int8.SplitInt8``: the CNN
feature encoder in static int8 too, calibrated on N training utterances of the run (evenly
spread over its training manifest), the transformer's linear layers in dynamic int8.

    ./s3env python benchmarks/int8_backends.py --run results/weight_ft/1986 --cnn-int8 32

``--cnn-float-layers 0 2`` keeps those conv layers in float, ``--calibration-percentile`` and
``--calibration-method`` (``percentile``, ``minmax``, ``entropy``) set the activation ranges.

With ``--cnn-study`` as well, where the static int8 CNN loses its error rate and what recovers
it: on the first ``--utterances`` of ``--split``, greedy WER and CER of fp32, of the transformer
alone in dynamic int8, of the whole CNN in static int8 (``--cnn-int8`` calibration utterances,
99.5th percentile), of each conv layer alone in static int8, of the CNN with the first layer
and with the layers that lose most kept in float, and of other calibrations (more utterances,
other percentiles, minimum-maximum, entropy); beside each, the CNN's and the whole model's
latency on 10 s of audio at one thread, all in this one run. A Markdown table is printed and,
with ``--record``, a JSON record written.

    OMP_NUM_THREADS=1 ./s3env python benchmarks/int8_backends.py --threads 1 \
        --run results/comparison/seed1986/weight_ft --cnn-int8 32 --cnn-study \
        --split test-clean --utterances 1000 --record benchmarks/records/int8_cnn.json
"""

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import AutoModel, Wav2Vec2Config

from s3brain.backbone.wrapper import default_backbone
from s3brain.deployment.int8 import OnnxInt8, frame_agreement, torch_int8
from s3brain.utils.efficiency import export_onnx, median_latency_ms, onnx_session


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["base", "tiny"], default="base")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--run", type=Path, help="a finished LibriSpeech run's output folder")
    parser.add_argument("--hparams", default="weight_ft.yaml", help="its yaml (with --run)")
    parser.add_argument("--cnn-int8", type=int, default=0, metavar="N",
                        help="with --run: the CNN in static int8 too, calibrated on N training "
                             "utterances")
    parser.add_argument("--cnn-float-layers", type=int, nargs="*", default=[], metavar="I",
                        help="with --cnn-int8: conv layers kept in float (0: the one on audio)")
    parser.add_argument("--calibration-percentile", type=float, default=99.5,
                        help="with --cnn-int8: activation ranges at this percentile")
    parser.add_argument("--calibration-method", default="percentile",
                        choices=["percentile", "minmax", "entropy"],
                        help="with --cnn-int8: how the activation ranges are set")
    parser.add_argument("--cnn-study", action="store_true",
                        help="with --run and --cnn-int8: per-layer and calibration options of the "
                             "static int8 CNN (see the module doc)")
    parser.add_argument("--headline", action="store_true",
                        help="with --cnn-study: only fp32, the transformer alone in int8, the "
                             "whole CNN in int8, with its first layer in float and with "
                             "--cnn-float-layers in float")
    parser.add_argument("--split", default="test-clean", help="with --cnn-study: the test split")
    parser.add_argument("--utterances", type=int, default=200,
                        help="with --cnn-study: its first N utterances")
    parser.add_argument("--record", type=Path, help="with --cnn-study: the JSON record to write")
    args = parser.parse_args(argv)
    if args.run is not None and args.cnn_study:
        return cnn_study(args, argv if argv is not None else sys.argv[1:])
    if args.run is not None:
        return measure_run(args.run, args.hparams, args.threads[0], args.repeats, args.cnn_int8,
                           {"float_layers": args.cnn_float_layers,
                            "percentile": args.calibration_percentile,
                            "method": args.calibration_method})
    torch.manual_seed(0)
    hf = (AutoModel.from_config(Wav2Vec2Config()) if args.model == "base"
          else AutoModel.from_pretrained(default_backbone())).eval()
    head = torch.nn.Linear(hf.config.hidden_size, 29).eval()
    wav = torch.randn(1, int(args.seconds * 16000)) * 0.1

    def forward(x):
        return head(hf(x).last_hidden_state)

    q_hf, q_head = torch_int8([hf, head])
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        export_onnx(forward, [hf, head], wav, f"{tmp}/fp32.onnx")
        int8 = OnnxInt8(f"{tmp}/fp32.onnx")  # the same export, quantized (per channel)
        shutil.copy(f"{tmp}/fp32.onnx", f"{tmp}/fp32_tensor.onnx")
        per_tensor = OnnxInt8(f"{tmp}/fp32_tensor.onnx", per_channel=False)  # one scale a layer
        reference = forward(wav)
        outputs = {"torch int8": q_head(q_hf(wav).last_hidden_state), "onnxruntime int8": int8(wav),
                   "ort int8 per-tensor": per_tensor(wav)}
        print(f"{args.model} model, {args.seconds:g} s of audio, batch 1, median of "
              f"{args.repeats}")
        print(f"{'':20s} {'threads':>7s} {'ms':>9s} {'speed-up':>9s} {'max diff/std':>13s} "
              f"{'same arg-max':>13s}")
        for threads in args.threads:
            fp32_session, int8_session, tensor_session = (
                onnx_session(path, threads) for path in (f"{tmp}/fp32.onnx", int8.path,
                                                         per_tensor.path))
            feed = {"wav": wav.numpy()}
            timings = {
                "torch fp32": median_latency_ms(forward, wav, repeats=args.repeats,
                                                threads=threads),
                "torch int8": median_latency_ms(lambda x: q_head(q_hf(x).last_hidden_state), wav,
                                                repeats=args.repeats, threads=threads),
                "onnxruntime fp32": median_latency_ms(lambda: fp32_session.run(None, feed),
                                                      repeats=args.repeats),
                "onnxruntime int8": median_latency_ms(lambda: int8_session.run(None, feed),
                                                      repeats=args.repeats),
                "ort int8 per-tensor": median_latency_ms(lambda: tensor_session.run(None, feed),
                                                         repeats=args.repeats)}
            base = timings["torch fp32"]
            for name, ms in timings.items():
                out = outputs.get(name)
                diff = (f"{float((out - reference).abs().max() / reference.std()):13.3f}"
                        if out is not None else f"{'-':>13s}")
                agree = f"{frame_agreement(reference, out):13.3f}" if out is not None \
                    else f"{'-':>13s}"
                print(f"{name:20s} {threads:7d} {ms:9.1f} {base / ms:8.2f}x {diff} {agree}")


def load_run(folder, yaml, tmp):
    """The recipe module, hparams (the run's best checkpoint loaded), label encoder, training
    set and test sets of a finished LibriSpeech run; nothing is written into ``folder``."""
    from hyperpyyaml import load_hyperpyyaml

    from s3brain.utils.checkpoint import load_finetuned

    recipe_dir = Path(__file__).resolve().parents[1] / "recipes" / "LibriSpeech"
    spec = importlib.util.spec_from_file_location("librispeech_train", recipe_dir / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    with open(recipe_dir / "hparams" / yaml, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, {"output_folder": tmp})
    label_encoder = recipe.label_encoder_for(hparams)
    manifests = {"train": folder / "train.csv",
                 **{s: folder / f"{s}.csv" for s in hparams["dev_splits"]
                    + hparams["test_splits"]}}
    train, valid, tests = recipe.dataio_prepare(hparams, manifests, label_encoder)
    load_finetuned(folder, {"ssl": hparams["ssl"], "model": hparams["model"]})
    return hparams, label_encoder, train, valid, tests


def evenly_spread(dataset, n):
    """``n`` waveforms ``[1, samples]`` evenly spread over ``dataset``."""
    step = max(1, len(dataset) // n)
    return [dataset[i]["sig"][None].float() for i in range(0, len(dataset), step)][:n]


def cnn_study(args, argv):
    """Where the static int8 CNN loses its error rate and what recovers it (module doc)."""
    from s3brain.deployment.int8 import SplitInt8
    from s3brain.deployment.model import deploy, int8_error_rates

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        hparams, label_encoder, train, _, tests = load_run(args.run, args.hparams, tmp)
        data = tests[args.split]
        data = [data[i] for i in range(min(args.utterances, len(data)))]
        head = torch.nn.Sequential(hparams["modules"]["head"], hparams["modules"]["ctc_lin"])
        deployment = deploy(hparams["ssl"], head)
        calibrations = {n: evenly_spread(train, n) for n in (args.cnn_int8, 128, len(train))}
        base = SplitInt8.export(deployment.hf, deployment.head, data[0]["sig"][None].float(), tmp,
                                normalize=deployment.ssl.normalize_wav,
                                output_norm=deployment.ssl.output_norm)
        layers = len(deployment.hf.config.conv_dim)
        wav10 = torch.randn(1, 160000) * 0.1
        feed = {"wav": wav10.numpy()}
        default = {"utterances": args.cnn_int8, "method": "percentile", "percentile": 99.5,
                   "max_chunks": 64, "chunk_samples": 32000}
        tag = args.split.replace("-", "_")
        rows, timed = [], []

        def measure(name, model, float_layers=None, calib=None):
            decoders = (deployment.fp32, model if model is not None else deployment.fp32)
            rates = int8_error_rates(SimpleNamespace(decoders=lambda: decoders,
                                                     not_decodable=None),
                                     data, args.split, label_encoder, hparams["blank_index"])
            row = {"option": name, "cnn_int8_layers": (
                       None if float_layers is None
                       else [i for i in range(layers) if i not in float_layers]),
                   "calibration": calib, "wer": rates[f"wer_{tag}_int8"],
                   "cer": rates[f"cer_{tag}_int8"],
                   "same_transcript_as_fp32": rates[f"int8_same_transcript_{tag}"]}
            rows.append(row)
            # fp32: torch, as the recipe scores it; its CNN timed as the float ONNX one
            timed.append(((base if model is None else model).cnn,
                          deployment.fp32 if model is None else model))
            print(f"  {name}: WER {row['wer']}, CER {row['cer']}", flush=True)
            return row

        def static(name, float_layers=(), utterances=args.cnn_int8, method="percentile",
                   percentile=99.5, max_chunks=64, chunk=32000):
            calib = {"utterances": utterances, "method": method,
                     "percentile": percentile if method == "percentile" else None,
                     "max_chunks": max_chunks, "chunk_samples": chunk}
            model = base.with_static_cnn(calibrations[utterances], float_layers=float_layers,
                                         method=method, percentile=percentile,
                                         max_chunks=max_chunks, chunk=chunk)
            return measure(name, model, list(float_layers), calib)

        measure("fp32", None)
        measure("int8 transformer (dynamic), CNN float", base, list(range(layers)))
        whole = static("+ CNN static int8, all layers")
        only = [] if args.headline else [
            static(f"+ CNN static int8, layer {i} only", [j for j in range(layers) if j != i])
            for i in range(layers)]
        worst = None
        if args.headline:
            for float_layers in [[0]] + ([sorted(set(args.cnn_float_layers))]
                                         if sorted(set(args.cnn_float_layers)) not in ([], [0])
                                         else []):
                static(f"+ CNN static int8, layer{'s' * (len(float_layers) > 1)} "
                       f"{', '.join(map(str, float_layers))} float", float_layers)
        else:
            # the layers that lose most alone: highest CER, then WER (CER counts five times as
            # many tokens: on a weak model's saturated WER, a layer's small loss shows there first)
            worst = sorted(range(layers), key=lambda i: (-only[i]["cer"], -only[i]["wer"]))
            kept = []
            for float_layers in ([0], worst[:1], worst[:2], [0, *worst[:2]], worst[:3]):
                float_layers = sorted(set(float_layers))
                if float_layers not in kept:
                    kept.append(float_layers)
                    static(f"+ CNN static int8, layer{'s' * (len(float_layers) > 1)} "
                           f"{', '.join(map(str, float_layers))} float", float_layers)
            static("+ CNN static int8, 128 calibration utterances", utterances=128, max_chunks=256)
            static(f"+ CNN static int8, all {len(train)} training utterances in 1 s chunks",
                   utterances=len(train), max_chunks=2000, chunk=16000)
            for pct in (99.0, 99.9, 99.99):
                static(f"+ CNN static int8, percentile {pct}", percentile=pct)
            static("+ CNN static int8, min-max ranges", method="minmax")
            static("+ CNN static int8, entropy ranges", method="entropy")

        # latency: every option in turn, round after round, so that a load on the shared CPU
        # falls on all of them alike; the median of each
        cnn_times, total_times = ([[] for _ in timed] for _ in range(2))
        with torch.no_grad():
            for round_ in range(args.repeats + 1):
                for i, (cnn, model) in enumerate(timed):
                    start = time.perf_counter()
                    cnn.run(None, feed)
                    middle = time.perf_counter()
                    model(wav10)
                    if round_:  # the first round warms up
                        cnn_times[i].append(1000 * (middle - start))
                        total_times[i].append(1000 * (time.perf_counter() - middle))
        for row, cnn_ms, total_ms in zip(rows, cnn_times, total_times):
            row["cnn_ms_10s"] = round(statistics.median(cnn_ms), 2)
            row["total_ms_10s"] = round(statistics.median(total_ms), 2)

    print(f"\n{args.run}, {args.split}, first {len(data)} utterances, greedy; latency: 10 s of "
          f"audio, 1 thread, median of {args.repeats}; calibration: "
          f"{args.cnn_int8} training utterances, 99.5th percentile unless said\n")
    print("| option | WER | CER | same transcript as fp32 | CNN ms / 10 s | total ms / 10 s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['option']} | {row['wer']:.2f} | {row['cer']:.2f} | "
              f"{row['same_transcript_as_fp32']:.1%} | {row['cnn_ms_10s']:.1f} | "
              f"{row['total_ms_10s']:.1f} |")
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        study = {"command": "OMP_NUM_THREADS=1 ./s3env python benchmarks/int8_backends.py "
                            + " ".join(argv),
                 "run": str(args.run), "split": args.split, "utterances": len(data),
                 "decoding": "greedy CTC, batch 1", "threads": 1, "audio_seconds": 10,
                 "repeats": args.repeats, "default_calibration": default,
                 "whole_cnn_int8_wer": whole["wer"], "layers_losing_most": worst,
                 "rows": rows}
        # one record, a study per (run, split, utterances, headline or not)
        key = (study["run"], args.split, len(data), args.headline)
        studies = (json.loads(args.record.read_text())["studies"] if args.record.exists()
                   else [])
        studies = [other for other in studies if (other["run"], other["split"],
                   other["utterances"], other.get("headline", False)) != key]
        studies.append({**study, "headline": args.headline})
        args.record.write_text(json.dumps({"studies": studies}, indent=1) + "\n")
        print(f"\nwritten {args.record}")


def measure_run(folder, yaml, threads, repeats, cnn_int8=0, static_options=None):
    """fp32 against int8 for a finished LibriSpeech run (see the module doc); nothing is
    written into ``folder``."""
    from s3brain.deployment.model import deploy, deployment_cost, int8_error_rates

    recorded = json.loads((folder / "results.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        hparams, label_encoder, train, _, tests = load_run(folder, yaml, tmp)
        head = torch.nn.Sequential(hparams["modules"]["head"], hparams["modules"]["ctc_lin"])
        deployment = deploy(hparams["ssl"], head)
        cost = deployment_cost(deployment, seconds=10, repeats=repeats, threads=threads)
        if cnn_int8:
            from s3brain.deployment.int8 import SplitInt8

            calibration = evenly_spread(train, cnn_int8)
            split = SplitInt8.export(deployment.hf, deployment.head, calibration[0], tmp,
                                     normalize=deployment.ssl.normalize_wav,
                                     output_norm=deployment.ssl.output_norm,
                                     calibration=calibration,
                                     static_options=static_options)
            deployment.int8 = deployment.int8_decoding = split
            print(f"  int8: the CNN in static int8 too, calibrated on {len(calibration)}"
                  f" training utterances ({static_options})")
        fp32_only = SimpleNamespace(decoders=lambda: (deployment.fp32, deployment.fp32),
                                    not_decodable=None)
        print(f"{folder}: {len(tests)} test splits, {threads} thread(s), median of {repeats}")
        print(f"  latency / 10 s: torch fp32 {cost['latency_ms_10s']:.1f} ms, onnxruntime fp32 "
              f"{cost['onnx_latency_ms_10s']:.1f} ms, int8 ({cost['int8_backend']}) "
              f"{cost['latency_ms_10s_int8']:.1f} ms (RTF {cost['rtf']:.4f} -> "
              f"{cost['rtf_int8']:.4f})")
        for split, data in tests.items():
            tag = split.replace("-", "_")
            fp32 = int8_error_rates(fp32_only, data, split, label_encoder,
                                    hparams["blank_index"])
            int8 = int8_error_rates(deployment, data, split, label_encoder,
                                    hparams["blank_index"])
            print(f"  {split} ({len(data)} utterances): WER recorded {recorded.get(f'wer_{tag}')}"
                  f", fp32 {fp32[f'wer_{tag}_int8']:.2f}, int8 {int8[f'wer_{tag}_int8']:.2f}; "
                  f"CER recorded {recorded.get(f'cer_{tag}')}, fp32 {fp32[f'cer_{tag}_int8']:.2f}"
                  f", int8 {int8[f'cer_{tag}_int8']:.2f}; same transcript "
                  f"{int8[f'int8_same_transcript_{tag}']:.1%}")


if __name__ == "__main__":
    main()
