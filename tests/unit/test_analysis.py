"""Mask and phoneme-inventory similarity and their correlation (s3brain.strategies.s3router.analysis)."""

import numpy as np
import pytest
import torch
from test_masks import small_model

from s3brain.strategies.s3router import analysis
from s3brain.strategies.s3router.mask_bank import save_mask
from s3brain.strategies.s3router.masks import add_masks, topk_mask


def random_mask(shape, keep, seed):
    scores = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    return topk_mask(scores, int(keep * scores.numel())).bool()


def test_self_similarity_is_one_and_complement_far_lower():
    mask = random_mask((64, 32), 0.9, 0)
    assert analysis.mask_cosine(mask, mask) == pytest.approx(1.0)
    assert analysis.mask_cosine(mask, ~mask) == 0.0
    other = random_mask((64, 32), 0.9, 1)  # independent masks at 90 % kept overlap ~ 0.9
    assert analysis.mask_cosine(mask, other) == pytest.approx(0.9, abs=0.02)
    # Against the dense formula on float vectors.
    a, b = mask.float().reshape(-1), other.float().reshape(-1)
    assert analysis.mask_cosine(mask, other) == pytest.approx(float(a @ b / (a.norm() * b.norm())))


def test_correlations_match_independent_formulas():
    rng = np.random.default_rng(0)
    tasks, layers = 5, 3
    phoneme_sim = np.eye(tasks)
    phoneme_sim[np.triu_indices(tasks, 1)] = rng.random(10)
    phoneme_sim = np.maximum(phoneme_sim, phoneme_sim.T)
    mask_sim = np.stack([np.eye(tasks)] * layers)
    y = analysis.pair_values(phoneme_sim)
    pairs = np.triu_indices(tasks, 1)
    mask_sim[0][pairs] = y ** 3                      # monotone, not linear
    mask_sim[1][pairs] = 2 * y + 1                   # linear
    mask_sim[2][pairs] = rng.random(10)              # unrelated
    rows = analysis.correlation_by_layer(["l0", "l1", "l2"], mask_sim, phoneme_sim)

    def ranks(v):
        return np.argsort(np.argsort(v)).astype(float)

    for row, layer in zip(rows, mask_sim):
        x = analysis.pair_values(layer)
        assert row["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
        assert row["spearman"] == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    assert rows[0]["spearman"] == pytest.approx(1.0) and rows[0]["pearson"] < 0.999
    assert rows[1]["pearson"] == pytest.approx(1.0)


def test_inventory_similarity_on_known_sets():
    tasks, sim = analysis.inventory_similarity({"a": {"p", "t", "k"}, "b": {"p", "t"},
                                                "c": {"m"}})
    assert tasks == ["a", "b", "c"]
    assert sim[0, 1] == pytest.approx(2 / np.sqrt(6))
    assert sim[0, 2] == 0.0 and np.allclose(np.diag(sim), 1.0)


def test_whole_analysis_from_mask_files_and_corpus_tsvs(tiny_corpus, tmp_path):
    cv = tiny_corpus / "CommonVoice"
    langs = sorted(p.name for p in cv.iterdir() if (p / "train.tsv").exists())[:4]
    assert len(langs) >= 3
    inventories = {lang: analysis.read_inventory(cv / lang / "train.tsv") for lang in langs}
    assert all(len(inv) > 10 for inv in inventories.values())
    files = {}
    for seed, lang in enumerate(langs):
        model = small_model()
        add_masks(model, sparsity=0.1, init="ri", seed=seed)
        files[lang] = tmp_path / f"{lang}.safetensors"
        save_mask(files[lang], model)
    rows = analysis.analyse(files, {l: cv / l / "train.tsv" for l in langs}, langs[0],
                            tmp_path / "out")
    assert len(rows) == 6  # FFN layers of the 3 blocks
    assert all(-1 <= r["pearson"] <= 1 for r in rows)
    assert (tmp_path / "out" / "mask_similarity.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "out" / "mask_similarity.csv").read_text().splitlines()
    assert len(lines) == 1 + 6 * len(langs) * (len(langs) - 1) // 2
    assert (tmp_path / "out" / "correlation.md").read_text().count("\n") == 2 + 6
