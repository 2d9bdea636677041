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
"""

import argparse
import importlib.util
import json
import shutil
import tempfile
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
    args = parser.parse_args(argv)
    if args.run is not None:
        return measure_run(args.run, args.hparams, args.threads[0], args.repeats, args.cnn_int8)
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


def measure_run(folder, yaml, threads, repeats, cnn_int8=0):
    """fp32 against int8 for a finished LibriSpeech run (see the module doc); nothing is
    written into ``folder``."""
    from hyperpyyaml import load_hyperpyyaml

    from s3brain.deployment.model import deploy, deployment_cost, int8_error_rates
    from s3brain.utils.checkpoint import load_finetuned

    recipe_dir = Path(__file__).resolve().parents[1] / "recipes" / "LibriSpeech"
    spec = importlib.util.spec_from_file_location("librispeech_train", recipe_dir / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)

    recorded = json.loads((folder / "results.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        with open(recipe_dir / "hparams" / yaml, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, {"output_folder": tmp})
        label_encoder = recipe.label_encoder_for(hparams)
        manifests = {"train": folder / "train.csv",
                     **{s: folder / f"{s}.csv" for s in hparams["dev_splits"]
                        + hparams["test_splits"]}}
        train, _, tests = recipe.dataio_prepare(hparams, manifests, label_encoder)
        load_finetuned(folder, {"ssl": hparams["ssl"], "model": hparams["model"]})
        head = torch.nn.Sequential(hparams["modules"]["head"], hparams["modules"]["ctc_lin"])
        deployment = deploy(hparams["ssl"], head)
        cost = deployment_cost(deployment, seconds=10, repeats=repeats, threads=threads)
        if cnn_int8:
            from s3brain.deployment.int8 import SplitInt8

            step = max(1, len(train) // cnn_int8)
            calibration = [train[i]["sig"][None].float() for i in range(0, len(train), step)]
            split = SplitInt8.export(deployment.hf, deployment.head, calibration[0], tmp,
                                     normalize=deployment.ssl.normalize_wav,
                                     output_norm=deployment.ssl.output_norm,
                                     calibration=calibration[:cnn_int8])
            deployment.int8 = deployment.int8_decoding = split
            print(f"  int8: the CNN in static int8 too, calibrated on {len(calibration[:cnn_int8])}"
                  f" training utterances")
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
