#!/usr/bin/env python3
"""Token skipping at matched FLOPs (the S6-DAMON paper's Tab. 5) on the LibriSpeech recipe:
SALAD at each NAT skip ratio, then uniform and random skip dropping the same share of frames
SALAD dropped on test-clean, token merging (``token_merging.yaml``, from the dense run) at the
merge ratio whose share of token-block products is SALAD's kept share, and the S6-DAMON point
(SALAD + SAFARI); one Markdown table.

Every run is the recipe itself in its own folder under ``--out``; finished runs are reused. The
SALAD detector (``train_salad.py``) and the weight fine-tuning run (the dense reference, and the
start of S6-DAMON) must exist.

    ./s3env python studies/token_skipping/token_skipping.py --dense results/weight_ft/1986
    ./s3env python studies/token_skipping/token_skipping.py --levels 0.8 --no-s6damon --jobs 1   #
    one lane ./s3env python studies/token_skipping/token_skipping.py --no-merging          #
    without token merging ./s3env python studies/token_skipping/token_skipping.py --report-only
"""

import argparse
import concurrent.futures
import json
from pathlib import Path

from s3brain.compare.collect import finished_results
from s3brain.compare.launch import run_strategy

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "LibriSpeech"


def run(yaml, folder, overrides):
    results, status = run_strategy(RECIPE, yaml, folder,
                                   [f"--{k}={v}" for k, v in overrides.items()], threads=1,
                                   log_name="skipping.log")
    print(f"{folder.name}: {status}", flush=True)
    return results


def matched_baselines(args, level, salad):
    """Uniform and random skip dropping the share of frames SALAD dropped on test-clean, and
    token merging computing that share of the token-block products."""
    drop = round(1.0 - salad["kept_share_test_clean"], 4)
    common = {"drop_share": drop, **args.common}
    jobs = [("skip_uniform.yaml", args.out / f"skip_uniform_{level}", common),
            ("skip_random.yaml", args.out / f"skip_random_{level}", common)]
    if args.merging:
        jobs.append(("token_merging.yaml", args.out / f"token_merging_{level}", {
            "merge_after": "[0]", "merge_ratio": matched_merge_ratio(
                salad["kept_share_test_clean"], [0]),
            "init_from": args.dense, **args.common}))
    return jobs


def matched_merge_ratio(kept_share, merge_after):
    """The merge ratio (after the blocks ``merge_after``) at which the default backbone's
    blocks compute ``kept_share`` of the token-block products."""
    from transformers import AutoConfig

    from s3brain.backbone.wrapper import default_backbone
    from s3brain.strategies.token_merging.base import merge_ratio_for

    blocks = AutoConfig.from_pretrained(default_backbone()).num_hidden_layers
    return round(merge_ratio_for(kept_share, blocks, list(merge_after)), 4)


def run_all(args):
    salad_jobs = {level: ("salad.yaml", args.out / f"salad_{level}",
                          {"skip_ratio": level, "salad_detector": args.detector, **args.common})
                  for level in args.levels}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run, *job): ("salad", level) for level, job in salad_jobs.items()}
        if args.s6damon:
            futures[pool.submit(run, "s6damon.yaml", args.out / "s6damon", {
                "sparsity": args.s6damon_sparsity, "skip_ratio": args.s6damon_skip_ratio,
                "init_from": args.dense, "salad_detector": args.detector, **args.common})] = \
                ("s6damon", None)
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                kind, level = futures[future]
                if kind == "salad" and future.result():
                    for job in matched_baselines(args, level, future.result()):
                        new = pool.submit(run, *job)
                        futures[new] = ("baseline", level)
                        pending.add(new)


def transformer_flops_ratio(kept_share, seconds=10):
    """FLOPs of the backbone's transformer on ``kept_share`` of the frames of ``seconds`` of
    audio, over its FLOPs on all of them (attention makes this less than linear)."""
    import torch
    from transformers import AutoModel

    from s3brain.backbone.wrapper import default_backbone
    from s3brain.utils.efficiency import count_flops

    model = AutoModel.from_pretrained(default_backbone()).eval()
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(seconds * 16000)))
    hidden = torch.zeros(1, frames, model.config.hidden_size)
    with torch.no_grad():
        full = count_flops(lambda: model.encoder(hidden))
        kept = count_flops(lambda: model.encoder(hidden[:, : max(1, round(kept_share * frames))]))
    return kept / full


def merged_transformer_flops_ratio(run_folder, seconds=10):
    """FLOPs of the backbone's transformer under a token-merging run's schedule (its
    ``hyperparams.yaml``: ``merge_after``, ``merge_ratio``) on ``seconds`` of audio, over its
    FLOPs without merging."""
    import torch
    import yaml
    from transformers import AutoModel

    from s3brain.backbone.families import Frames
    from s3brain.backbone.wrapper import default_backbone
    from s3brain.strategies.token_merging.merging import merged_blocks
    from s3brain.utils.efficiency import count_flops

    keys = {}
    for line in (run_folder / "hyperparams.yaml").read_text().splitlines():
        if line.startswith(("merge_after:", "merge_ratio:")):
            keys.update(yaml.safe_load(line))
    model = AutoModel.from_pretrained(default_backbone()).eval()
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(seconds * 16000)))
    hidden = torch.zeros(1, frames, model.config.hidden_size)

    def encoder(ratio):
        """The blocks on every frame, merging at ``ratio``."""
        return merged_blocks(model, Frames(hidden, None, None, None), keys["merge_after"], ratio)

    return count_flops(lambda: encoder(keys["merge_ratio"])) / count_flops(lambda: encoder(0.0))


def report(args):
    dense = finished_results(args.dense)
    if dense is None:
        print(f"no finished dense run in {args.dense}")
        return
    rows = [("weight fine-tuning (dense)", "", dense)]
    for path in sorted(args.out.glob("*/results.json")):
        results = finished_results(path.parent)
        if results:
            rows.append((results["strategy"], path.parent.name.rsplit("_", 1)[-1]
                         if results["strategy"] != "s6damon" else
                         f"sp {results['sparsity']:g}", results))
    order = {"weight fine-tuning (dense)": 0, "salad": 1, "skip_uniform": 2, "skip_random": 3,
             "token_merging": 4, "s6damon": 5}
    rows.sort(key=lambda r: (order.get(r[0], 9), r[1]))
    lines = ["| method | level | frames kept (test-clean) | GFLOPs / 10 s | FLOPs saving | "
             "transformer FLOPs saving | WER test-clean / test-other | with 4-gram LM |",
             "|---" * 8 + "|"]
    for name, level, r in rows:
        kept = r.get("kept_share_test_clean")
        saving = 1.0 - r["flops_10s"] / dense["flops_10s"]
        if kept is None or r["strategy"] == "s6damon":
            t_saving = ""
        elif r["strategy"] == "token_merging":
            ratio = merged_transformer_flops_ratio(args.out / f"token_merging_{level}")
            t_saving = f"{1.0 - ratio:.1%}"
        else:
            t_saving = f"{1.0 - transformer_flops_ratio(kept):.1%}"
        lines.append(f"| {name} | {level} | {'' if kept is None else f'{kept:.1%}'} | "
                     f"{r['flops_10s'] / 1e9:.2f} | {saving:.1%} | {t_saving} | "
                     f"{r['wer_test_clean']} / "
                     f"{r['wer_test_other']} | {r['wer_test_clean_lm']} / "
                     f"{r['wer_test_other_lm']} |")
    table = "\n".join(lines)
    (args.out / "token_skipping.md").write_text(table + "\n")
    (args.out / "token_skipping.json").write_text(json.dumps(
        [{"method": n, "level": lvl, **{k: r.get(k) for k in (
            "kept_share_test_clean", "flops_10s", "wer_test_clean", "wer_test_other",
            "wer_test_clean_lm", "wer_test_other_lm", "sparsity")}} for n, lvl, r in rows],
        indent=2) + "\n")
    print(table)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "token_skipping")
    parser.add_argument("--dense", type=Path, default=REPO / "results" / "weight_ft" / "1986",
                        help="the weight fine-tuning run (teacher, dense reference)")
    parser.add_argument("--detector", type=Path,
                        default=REPO / "results" / "salad_detector" / "1986")
    parser.add_argument("--levels", nargs="*", default=["0.6", "0.8"],
                        help="SALAD skip ratios of the detected non-salient frames")
    parser.add_argument("--no-s6damon", dest="s6damon", action="store_false")
    parser.add_argument("--no-merging", dest="merging", action="store_false",
                        help="without the token-merging row at each level")
    parser.add_argument("--s6damon-sparsity", default="0.3")
    parser.add_argument("--s6damon-skip-ratio", default="0.6")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an hparams override for every run")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.common = dict(item.split("=", 1) for item in args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_all(args)
    report(args)


if __name__ == "__main__":
    main()
