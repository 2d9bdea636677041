"""What the learned masks say: layer-wise mask similarity between languages (or tasks), phoneme
inventory similarity, and how the two correlate, per layer (S3-Router paper, section 6.3 and
supplement section 4).

    python -m s3brain.strategies.s3router.analysis --masks en=results/en/task_mask.safetensors \\
        de=results/de/task_mask.safetensors nl=... --phonemes en=CommonVoice/en/train.tsv \\
        de=CommonVoice/de/train.tsv nl=... --reference en --out results/analysis

Mask similarity is the cosine similarity of two binary masks of one layer; phoneme similarity is
the cosine similarity of binary inventory vectors over the union of the languages' phonemes.
Without ``--phonemes`` (tasks rather than languages) only the mask similarities are written.

Example
-------
>>> import torch
>>> a = torch.tensor([1, 1, 0, 1], dtype=torch.bool)
>>> mask_cosine(a, a), mask_cosine(a, ~a)
(1.0, 0.0)
>>> float(round(inventory_similarity({"x": {"a", "b"}, "y": {"b", "c"}})[1][0, 1], 3))
0.5
"""

import argparse
import csv
import itertools
import math
from pathlib import Path

import numpy as np
from scipy import stats

from s3brain.strategies.s3router.mask_bank import read_mask_file


def mask_cosine(a, b):
    """Cosine similarity of two binary masks (1 = kept)."""
    a, b = a.reshape(-1).bool(), b.reshape(-1).bool()
    denominator = math.sqrt(int(a.sum()) * int(b.sum()))
    return float(int((a & b).sum()) / denominator) if denominator else 0.0


def layerwise_similarity(task_masks):
    """``(layers, tasks, sim)`` with ``sim[l, i, j]`` the cosine similarity of tasks i and j's
    masks on layer l. ``task_masks``: ``{task: {layer: bool tensor}}`` over the same layers."""
    tasks = list(task_masks)
    layers = list(task_masks[tasks[0]])
    for task in tasks[1:]:
        if list(task_masks[task]) != layers:
            raise ValueError(f"task {task!r} has masks on other layers than {tasks[0]!r}")
    sim = np.ones((len(layers), len(tasks), len(tasks)))
    for l, layer in enumerate(layers):
        for i, j in itertools.combinations(range(len(tasks)), 2):
            sim[l, i, j] = sim[l, j, i] = mask_cosine(task_masks[tasks[i]][layer],
                                                      task_masks[tasks[j]][layer])
    return layers, tasks, sim


def inventory_similarity(inventories):
    """``(tasks, sim)``: cosine similarity of binary phoneme-inventory vectors."""
    tasks = list(inventories)
    union = sorted(set().union(*inventories.values()))
    vectors = np.array([[p in inventories[t] for p in union] for t in tasks], dtype=float)
    norms = np.linalg.norm(vectors, axis=1)
    return tasks, (vectors @ vectors.T) / np.outer(norms, norms)


def read_inventory(path):
    """The set of phonemes in a CommonVoice-layout tsv (``phonemes`` column) or a manifest csv
    (``phn`` column), space-separated."""
    path = Path(path)
    delimiter, column = ("\t", "phonemes") if path.suffix == ".tsv" else (",", "phn")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if
                                delimiter == "\t" else csv.QUOTE_MINIMAL)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no {column!r} column (columns: {reader.fieldnames})")
        return {p for row in reader for p in row[column].split()}


def pair_values(matrix):
    """Upper-triangle entries (i < j) of a square matrix, in a fixed order."""
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    return matrix[rows, cols]


def correlation_by_layer(layers, mask_sim, phoneme_sim):
    """Per layer: Pearson and Spearman correlation (with p-values) between the language pairs'
    mask similarity and phoneme similarity."""
    y = pair_values(phoneme_sim)
    rows = []
    for l, layer in enumerate(layers):
        x = pair_values(mask_sim[l])
        pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
        rows.append({"layer": layer, "pearson": float(pearson[0]), "pearson_p": float(pearson[1]),
                     "spearman": float(spearman[0]), "spearman_p": float(spearman[1])})
    return rows


def short_layer_name(layer):
    """``encoder.layers.3.feed_forward.output_dense`` -> ``3.output_dense``."""
    parts = layer.split(".")
    return f"{parts[2]}.{parts[-1]}" if len(parts) > 3 else layer


def plot_similarity(layers, tasks, sim, reference, path):
    """Heatmap: each other task's mask similarity with ``reference``, layer by layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = tasks.index(reference)
    others = [i for i in range(len(tasks)) if i != ref]
    data = sim[:, ref, others].T
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(layers) + 2), 0.5 * len(others) + 2))
    image = ax.imshow(data, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(layers)), [short_layer_name(l) for l in layers], rotation=60,
                  ha="right", fontsize=8)
    ax.set_yticks(range(len(others)), [tasks[i] for i in others])
    for (r, c), value in np.ndenumerate(data):
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6, color="w")
    ax.set_title(f"mask cosine similarity with {reference}, per layer")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def analyse(mask_files, phoneme_files, reference, out):
    """Run the whole analysis; write CSV, Markdown and PNG files in ``out``; return the
    correlation rows (empty without phoneme files)."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task_masks = {task: read_mask_file(path)[0] for task, path in mask_files.items()}
    layers, tasks, sim = layerwise_similarity(task_masks)
    with open(out / "mask_similarity.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "task_a", "task_b", "cosine"])
        for l, layer in enumerate(layers):
            for i, j in itertools.combinations(range(len(tasks)), 2):
                writer.writerow([layer, tasks[i], tasks[j], f"{sim[l, i, j]:.6f}"])
    plot_similarity(layers, tasks, sim, reference or tasks[0], out / "mask_similarity.png")
    if not phoneme_files:
        return []
    if len(tasks) < 3:
        raise ValueError("correlating mask and phoneme similarity needs at least 3 languages "
                         "(2 or more pairs)")
    if set(phoneme_files) != set(tasks):
        raise ValueError(f"phoneme files for {sorted(phoneme_files)} but masks for {sorted(tasks)}")
    _, phoneme_sim = inventory_similarity({t: read_inventory(phoneme_files[t]) for t in tasks})
    rows = correlation_by_layer(layers, sim, phoneme_sim)
    lines = ["| layer | Pearson | p | Spearman | p |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {short_layer_name(r['layer'])} | {r['pearson']:.3f} | {r['pearson_p']:.3f} | "
              f"{r['spearman']:.3f} | {r['spearman_p']:.3f} |" for r in rows]
    (out / "correlation.md").write_text("\n".join(lines) + "\n")
    return rows


def _pairs(items, what):
    result = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--{what} wants name=path with an existing file, got {item!r}")
        result[name] = Path(path)
    return result


def main(argv=None):
    """Command line: mask similarity between tasks and its correlation with phoneme inventories.

    Reads the task mask files and (optionally) each task's phoneme manifest, writes the heatmap
    and the per-layer correlations to ``--out`` (see ``analyse``) and prints the correlations.

    Arguments
    ---------
    argv : list of str, optional
        The arguments (``sys.argv[1:]`` when None): ``--masks NAME=MASK_FILE ...`` (at least
        two), ``--phonemes NAME=TSV_OR_CSV ...``, ``--reference NAME``, ``--out FOLDER``.
    """
    parser = argparse.ArgumentParser(prog="python -m s3brain.strategies.s3router.analysis",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--masks", nargs="+", required=True, metavar="NAME=MASK_FILE")
    parser.add_argument("--phonemes", nargs="*", default=[], metavar="NAME=TSV_OR_CSV")
    parser.add_argument("--reference", default=None, help="task the heatmap compares with")
    parser.add_argument("--out", type=Path, default=Path("results") / "analysis")
    args = parser.parse_args(argv)
    masks = _pairs(args.masks, "masks")
    if len(masks) < 2:
        parser.error("need the masks of at least two tasks")
    try:
        rows = analyse(masks, _pairs(args.phonemes, "phonemes"), args.reference, args.out)
    except ValueError as err:
        raise SystemExit(f"ERROR: {err}") from err
    for row in rows:
        print(f"{short_layer_name(row['layer']):>20s}  Pearson {row['pearson']:+.3f}  "
              f"Spearman {row['spearman']:+.3f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
