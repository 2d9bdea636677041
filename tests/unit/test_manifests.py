"""Manifest helpers shared by the prepare scripts and recipes (s3brain.data.manifests)."""

from s3brain.data.manifests import spread_subset


def test_dev_subset_is_spread_over_the_sorted_ids():
    """``dev_max_utterances``: every k-th utterance of the sorted IDs, so every speaker of a
    dev split ordered speaker by speaker keeps its share; None keeps them all."""
    rows = {f"{spk}-1-{utt:04d}": {"wrd": "A"} for spk in (10, 11, 12, 13) for utt in range(5)}
    subset = spread_subset(rows, 8)
    assert len(subset) == 8 and set(subset) <= set(rows)
    assert sorted({uid.split("-")[0] for uid in subset}) == ["10", "11", "12", "13"]
    assert spread_subset(rows, None) == rows == spread_subset(rows, 20)
