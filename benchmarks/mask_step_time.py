#!/usr/bin/env python3
"""S3-Router cost figures, measured side by side in one run (CPU by default, or ``--device cuda``).

1. Training step time of mask fine-tuning (scores of the FFN layers, weights frozen) against
   weight fine-tuning (every transformer weight), same model, same batch, same optimizer (Adam).
   Target: ratio <= 1.15.
2. The same with the top-k computed by a full sort, to show what selection saves.
3. Mask bank: time to switch the active task, and bytes per task against the backbone.

    ./s3env python benchmarks/mask_step_time.py                 # the shipped tiny backbone
    ./s3env python benchmarks/mask_step_time.py --model base    # wav2vec2-base sized, random
    python benchmarks/mask_step_time.py --model base --device cuda  # on a GPU
"""

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, Wav2Vec2Config

from s3brain.backbone.wrapper import default_backbone
from s3brain.strategies.s3router import masks
from s3brain.strategies.s3router.mask_bank import MaskBank, save_mask


def build(model_name):
    if model_name == "tiny":
        return AutoModel.from_pretrained(default_backbone())
    torch.manual_seed(0)
    return AutoModel.from_config(Wav2Vec2Config())  # the wav2vec2-base architecture


def _sync(device):
    """Wait for the device's queued work, so that wall time measures it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def step_time(model, head, batch, repeats, warmup=2):
    """Median seconds of one forward + CTC-like loss + backward + Adam step."""
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + repeats):
        _sync(batch.device)
        start = time.perf_counter()
        logits = head(model(batch).last_hidden_state)
        loss = logits.log_softmax(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(batch.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), sum(p.numel() for p in params)


def sort_topk(scores, k):
    """Reference top-k by a full sort (what selection avoids)."""
    mask = torch.zeros_like(scores).reshape(-1)
    mask[scores.reshape(-1).argsort(descending=True)[:k]] = 1.0
    return mask.view_as(scores)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--model", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sparsity", type=float, default=0.1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = build(args.model).to(args.device)
    base.config.mask_time_prob = 0.0
    base.feature_extractor._freeze_parameters()
    batch = torch.randn(args.batch, int(args.seconds * 16000), device=args.device)
    head = torch.nn.Linear(base.config.hidden_size, 32).to(args.device)
    where = f"{args.threads} thread(s)" if args.device == "cpu" else args.device
    print(f"model {args.model}: {sum(p.numel() for p in base.parameters()) / 1e6:.1f} M params, "
          f"batch {args.batch} x {args.seconds:g} s, {where}, Adam")

    weight_ft = copy.deepcopy(base)
    t_weight, n_weight = step_time(weight_ft, copy.deepcopy(head), batch, args.repeats)
    rows = [("weight fine-tuning", t_weight, n_weight)]
    for scope in ("ffn", "both"):
        mask_ft = copy.deepcopy(base)
        masks.add_masks(mask_ft, sparsity=args.sparsity, scope=scope)
        t, n = step_time(mask_ft, copy.deepcopy(head), batch, args.repeats)
        rows.append((f"mask fine-tuning ({scope}, selection top-k)", t, n))
        if scope == "ffn":
            selection = masks.topk_mask
            masks.topk_mask = sort_topk  # the straight-through function looks it up at call time
            try:
                t_sort, _ = step_time(copy.deepcopy(mask_ft), copy.deepcopy(head), batch,
                                      args.repeats)
            finally:
                masks.topk_mask = selection
            rows.append(("mask fine-tuning (ffn, full-sort top-k)", t_sort, n))
    print(f"{'':44s} {'step s':>8s} {'ratio':>7s} {'trained':>10s}")
    for name, t, n in rows:
        print(f"{name:44s} {t:8.3f} {t / t_weight:7.3f} {n:10,d}")

    # Mask bank: two tasks on one backbone.
    with tempfile.TemporaryDirectory() as tmp:
        sizes = []
        for task, seed in (("A", 1), ("B", 2)):
            task_model = copy.deepcopy(base)
            masks.add_masks(task_model, sparsity=args.sparsity, init="ri", seed=seed)
            sizes.append(save_mask(Path(tmp) / f"{task}.safetensors", task_model, head=head))
        bank = MaskBank(copy.deepcopy(base))
        for task in ("A", "B"):
            bank.load_adapter(Path(tmp) / f"{task}.safetensors", task, head=copy.deepcopy(head))
        switches = []
        for i in range(20):
            _sync(args.device)
            start = time.perf_counter()
            bank.set_adapter("AB"[i % 2])
            _sync(args.device)
            switches.append(time.perf_counter() - start)
    backbone_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    print(f"switch task (mask bank, {len(masks.masked_linears(bank.backbone))} layers): "
          f"median {statistics.median(switches) * 1000:.2f} ms")
    print(f"bytes per task: {sizes[0]:,d} ({sizes[0] / backbone_bytes:.1%} of the "
          f"{backbone_bytes:,d}-byte backbone; head {sum(p.numel() for p in head.parameters()) * 4:,d})")


if __name__ == "__main__":
    main()
