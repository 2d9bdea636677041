#!/usr/bin/env python3
"""int8 on the CPU: torch against onnxruntime, side by side in one run.

The whole model (CNN feature extractor, transformer, a 29-output CTC head) on 10 s of audio,
batch 1: torch fp32, torch dynamic int8 (``torch.ao``), onnxruntime fp32 and onnxruntime dynamic
int8 (``s3brain.quantization``); median latency at each thread count, speed-up against torch
fp32, and how far the int8 outputs are from fp32's (largest difference over the logits' std,
share of frames with the same arg-max). Random weights: timing does not depend on them.

    ./s3env python benchmarks/int8_backends.py                     # wav2vec2-base size
    ./s3env python benchmarks/int8_backends.py --model tiny --threads 1 2
"""

import argparse
import tempfile

import torch
from transformers import AutoModel, Wav2Vec2Config

from s3brain.backbone import default_backbone
from s3brain.efficiency import export_onnx, median_latency_ms, onnx_session
from s3brain.quantization import OnnxInt8, frame_agreement, torch_int8


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["base", "tiny"], default="base")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
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
        int8 = OnnxInt8(f"{tmp}/fp32.onnx")  # the same export, quantized
        reference = forward(wav)
        outputs = {"torch int8": q_head(q_hf(wav).last_hidden_state), "onnxruntime int8": int8(wav)}
        print(f"{args.model} model, {args.seconds:g} s of audio, batch 1, median of "
              f"{args.repeats}")
        print(f"{'':20s} {'threads':>7s} {'ms':>9s} {'speed-up':>9s} {'max diff/std':>13s} "
              f"{'same arg-max':>13s}")
        for threads in args.threads:
            fp32_session, int8_session = onnx_session(f"{tmp}/fp32.onnx", threads), \
                onnx_session(int8.path, threads)
            feed = {"wav": wav.numpy()}
            timings = {
                "torch fp32": median_latency_ms(forward, wav, repeats=args.repeats,
                                                threads=threads),
                "torch int8": median_latency_ms(lambda x: q_head(q_hf(x).last_hidden_state), wav,
                                                repeats=args.repeats, threads=threads),
                "onnxruntime fp32": median_latency_ms(lambda: fp32_session.run(None, feed),
                                                      repeats=args.repeats),
                "onnxruntime int8": median_latency_ms(lambda: int8_session.run(None, feed),
                                                      repeats=args.repeats)}
            base = timings["torch fp32"]
            for name, ms in timings.items():
                out = outputs.get(name)
                diff = (f"{float((out - reference).abs().max() / reference.std()):13.3f}"
                        if out is not None else f"{'-':>13s}")
                agree = f"{frame_agreement(reference, out):13.3f}" if out is not None \
                    else f"{'-':>13s}"
                print(f"{name:20s} {threads:7d} {ms:9.1f} {base / ms:8.2f}x {diff} {agree}")


if __name__ == "__main__":
    main()
