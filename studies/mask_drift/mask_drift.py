#!/usr/bin/env python3
"""How far S3-Router's trained masks moved from the masks they started from, per mask init and
score learning rate: the mechanism behind the S3-Router paper's argument that the init matters
when the scores learn slowly.

    ./s3env python studies/mask_drift/mask_drift.py results/realtext_sweep/train-10m
    ./s3env python studies/mask_drift/mask_drift.py RUN_FOLDER ... --out results/mask_drift

Every folder below the given ones that holds a finished S3-Router run (``task_mask.safetensors``
and ``hyperparams.yaml``) is read. Its initial masks are rebuilt exactly as the recipe built them
(``s3brain.strategies.s3router.masks.add_masks`` on the backbone with the run's sparsity, init,
scope, blocks and ``seed``) on the backbone the run recorded in its ``results.json``
(``--backbone`` to give another), after checking that it is the one the masks were trained on (the
file's fingerprint). Per run, averaged over the masked layers:

- ``moved``: the share of the initially removed weights that the trained mask keeps (the same
  number of kept weights swapped out). 0: the mask never moved; a mask drawn afresh, independent
  of the init, gives ``1 - sparsity`` on average.
- ``removed_small``: the share of the trained mask's removed weights that are among the layer's
  smallest-magnitude weights (the ones one-shot magnitude pruning removes at the same sparsity).
  1: the trained mask removes what magnitude pruning removes; chance is the sparsity.

Runs with the same folder name (one cell of ``studies/s3router_sweep/s3router_sweep.py``, one
folder per seed) are pooled: mean +- std over the seeds. Writes ``mask_drift.md`` and ``.csv`` in
``--out``.
"""

import argparse
import json
import os
import re
from pathlib import Path

import torch

from s3brain.backbone.wrapper import default_backbone
from s3brain.compare.stats import mean_std
from s3brain.compare.tables import markdown_table, write_tables
from s3brain.strategies.s3router.mask_bank import backbone_fingerprint, read_mask_file
from s3brain.strategies.s3router.masks import add_masks, binary_masks, magnitude_mask

#: the Markdown table's columns (a value with a ``_std`` beside it is shown as mean +- std)
COLUMNS = ["cell", "init", "score_lr", "sparsity", "seeds", "moved", "removed_small"]


def yaml_value(folder, key):
    """A top-level scalar of a run's ``hyperparams.yaml`` as text (None if absent)."""
    match = re.search(rf"^{key}:\s*([^\s#]+)", (Path(folder) / "hyperparams.yaml").read_text(),
                      re.MULTILINE)
    return match.group(1) if match else None


def run_backbone(folder, given=None):
    """The backbone to rebuild a run's initial masks on: ``given``, else the local folder the
    run's ``results.json`` records as its ``ssl_hub``, else the default backbone.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as run:
    ...     _ = (Path(run) / "results.json").write_text(json.dumps({"ssl_hub": run}))
    ...     run_backbone(run) == run, run_backbone(run, "other")
    (True, 'other')
    >>> run_backbone("/nowhere") == default_backbone()
    True
    """
    if given is not None:
        return given
    results = Path(folder) / "results.json"
    if results.is_file():
        recorded = json.loads(results.read_text()).get("ssl_hub")
        if recorded and Path(recorded).is_dir():
            return recorded
    return default_backbone()


def moved_share(initial, final):
    """The share of the weights ``initial`` removes that ``final`` keeps (both boolean masks
    with the same number of kept weights).

    Example
    -------
    >>> a = torch.tensor([1, 1, 1, 0, 0], dtype=torch.bool)
    >>> moved_share(a, a), moved_share(a, torch.tensor([0, 1, 1, 1, 0], dtype=torch.bool))
    (0.0, 0.5)
    """
    removed = ~initial
    return float((removed & final).sum()) / max(1, int(removed.sum()))


def removed_small_share(weight, final):
    """The share of the weights ``final`` removes that magnitude pruning at the same sparsity
    (``s3brain.strategies.s3router.masks.magnitude_mask``) removes too.

    Example
    -------
    >>> w = torch.tensor([[0.1, -2.0, 0.3, 4.0]])
    >>> removed_small_share(w, torch.tensor([[0, 1, 1, 1]], dtype=torch.bool))
    1.0
    """
    sparsity = 1.0 - float(final.float().mean())
    small = ~magnitude_mask(weight, sparsity)
    return float((small & ~final).sum()) / max(1, int((~final).sum()))


@torch.no_grad()
def drift(folder, backbone):
    """``moved`` and ``removed_small`` of one run folder, averaged over its masked layers.

    Arguments
    ---------
    folder : Path
        A finished S3-Router run (``task_mask.safetensors``, ``hyperparams.yaml``).
    backbone : str
        The pretrained backbone the run started from (a ``save_pretrained`` folder).

    Returns
    -------
    dict or None
        ``init``, ``sparsity``, ``score_lr``, ``seed``, ``moved``, ``removed_small``; None for a
        mask file of another strategy (S3-Router-P's).
    """
    from transformers import AutoModel

    final, _, metadata = read_mask_file(Path(folder) / "task_mask.safetensors")
    info = json.loads(metadata["info"])
    if info.get("strategy") != "s3router":
        return None
    seed = int(yaml_value(folder, "seed"))
    model = AutoModel.from_pretrained(backbone)
    names = add_masks(model, sparsity=info["sparsity"], init=info["init"], scope=info["scope"],
                      blocks=info["blocks"], seed=seed)
    if backbone_fingerprint(model, names) != metadata["backbone_fingerprint"]:
        raise SystemExit(f"{folder}: its masks were trained on another backbone than {backbone} "
                         "(give --backbone)")
    initial = binary_masks(model)
    modules = dict(model.named_modules())
    moved, small = [], []
    for name in final:
        weight = modules[name].parametrizations.weight.original
        moved.append(moved_share(initial[name], final[name]))
        small.append(removed_small_share(weight, final[name]))
    return {"init": info["init"], "sparsity": info["sparsity"],
            "score_lr": yaml_value(folder, "lr_ssl"), "seed": seed,
            "moved": sum(moved) / len(moved), "removed_small": sum(small) / len(small)}


def pooled(runs):
    """One row per cell (run folder name) from ``{folder: drift}``: mean +- std over seeds."""
    cells = {}
    for folder, result in runs.items():
        cells.setdefault(Path(folder).name, []).append(result)
    rows = []
    for cell, results in cells.items():
        row = {"cell": cell, **{k: results[0][k] for k in ("init", "score_lr", "sparsity")},
               "seeds": len(results)}
        for key in ("moved", "removed_small"):
            row[key], row[f"{key}_std"] = mean_std([r[key] for r in results])
        rows.append(row)
    order = {"ori": 0, "ri": 1, "wmi": 2}
    return sorted(rows, key=lambda r: (float(r["score_lr"]), order.get(r["init"], 3), r["cell"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path,
                        help="run folders, or folders to search for S3-Router runs")
    parser.add_argument("--backbone", default=None,
                        help="the pretrained backbone the runs started from (default: the one "
                             "each run's results.json records)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write mask_drift.md / .csv (default: the first folder)")
    args = parser.parse_args(argv)
    runs = {}
    for root in args.folders:
        # the sweep links runs made elsewhere into its folders: follow the links
        for folder, _, files in sorted(os.walk(root, followlinks=True)):
            if {"task_mask.safetensors", "hyperparams.yaml"} <= set(files):
                result = drift(Path(folder), run_backbone(folder, args.backbone))
                if result is not None:
                    runs[Path(folder)] = result
    if not runs:
        raise SystemExit(f"no finished S3-Router run under {', '.join(map(str, args.folders))}")
    rows = pooled(runs)
    out = args.out or args.folders[0]
    write_tables(rows, out, "mask_drift", COLUMNS)
    print(markdown_table(rows, COLUMNS))
    print(f"moved: share of the initially removed weights the trained mask keeps (a mask "
          f"independent of its init: 1 - sparsity); removed_small: share of the removed weights "
          f"that magnitude pruning removes too (chance: the sparsity). Tables in {out}")
    return rows


if __name__ == "__main__":
    main()
