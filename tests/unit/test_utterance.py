"""SUPERB-style heads and metrics, and the synthetic task plan."""

import pytest
import torch

from s3brain.data import superb
from s3brain.lobes import heads
from s3brain.training import utterance


def test_weighted_layer_sum_is_a_softmax_weighted_sum():
    layer_sum = heads.WeightedLayerSum(3)
    with torch.no_grad():
        layer_sum.weights.copy_(torch.tensor([0.0, 1.0, -1.0]))
    hiddens = torch.randn(3, 2, 4, 5)
    w = torch.softmax(torch.tensor([0.0, 1.0, -1.0]), 0)
    expected = w[0] * hiddens[0] + w[1] * hiddens[1] + w[2] * hiddens[2]
    assert torch.allclose(layer_sum(hiddens), expected, atol=1e-6)


def test_head_pools_over_real_frames_only():
    torch.manual_seed(0)
    head = heads.UtteranceHead(layers=2, input_size=6, classes={"a": 3, "b": 5})
    alone = torch.randn(2, 1, 6, 6)
    padded = torch.cat([alone, torch.randn(2, 1, 4, 6) * 100], dim=2)  # 4 padding frames
    batch = torch.cat([padded, torch.randn(2, 1, 10, 6)], dim=1)
    out = head(batch, torch.tensor([0.6, 1.0]))
    ref = head(alone)
    assert set(out) == {"a", "b"} and out["b"].shape == (2, 5)
    assert torch.allclose(out["a"][0], ref["a"][0], atol=1e-5)


@pytest.mark.parametrize("pred,gold,expected", [
    ([{"object": "lights", "location": "kitchen"}], [{"object": "lights", "location": "kitchen"}], 1.0),
    ([{"object": "heat", "location": "none"}], [{"object": "lights", "location": "kitchen"}], 0.0),
    # one right of two true slots, one wrong predicted: P = 1/2, R = 1/2
    ([{"object": "lights", "location": "bedroom"}], [{"object": "lights", "location": "kitchen"}], 0.5),
    ([{"object": "none", "location": "none"}], [{"object": "none", "location": "none"}], 0.0),
])
def test_slot_f1_known_answers(pred, gold, expected):
    assert utterance.slot_f1(pred, gold) == pytest.approx(expected)


def test_intent_metrics_need_every_target_right():
    class Encoder:
        ind2lab = {0: "none", 1: "lights", 2: "kitchen"}

    stats = utterance.ClassificationStats(("action", "object", "location"), ("object", "location"),
                                          {"object": Encoder, "location": Encoder})
    truth = {"action": [0, 1, 1], "object": [1, 1, 0], "location": [2, 0, 0]}
    predicted = {"action": [0, 1, 0], "object": [1, 1, 0], "location": [2, 2, 0]}
    # the logits of a batch whose most likely classes are the predictions
    logits = {t: torch.nn.functional.one_hot(torch.tensor(p), 3).float() for t, p in predicted.items()}
    stats.append(logits, {t: torch.tensor(v) for t, v in truth.items()})
    stats = stats.summarize()
    assert stats["accuracy"] == pytest.approx(100 / 3)  # only the first has all three right
    assert stats["action_accuracy"] == pytest.approx(200 / 3)
    assert stats["location_accuracy"] == pytest.approx(200 / 3)
    # slot pairs: true {(o,lights),(l,kitchen)}, {(o,lights)}; predicted adds (l,kitchen) in #2
    assert stats["slot_f1"] == pytest.approx(100 * 2 * 0.75 * 1.0 / 1.75, abs=0.01)


def test_cross_entropy_is_summed_over_the_targets():
    torch.manual_seed(0)
    logits = {"action": torch.randn(4, 3), "object": torch.randn(4, 5)}
    truth = {"action": torch.tensor([0, 1, 2, 0]), "object": torch.tensor([4, 3, 2, 1])}
    expected = sum(torch.nn.functional.cross_entropy(logits[t], truth[t]) for t in truth)
    assert torch.allclose(utterance.summed_cross_entropy(logits, truth), expected)

    class Batch:
        action_id = type("Padded", (), {"data": truth["action"][:, None]})
        object_id = type("Padded", (), {"data": truth["object"][:, None]})

    ids = utterance.target_ids(Batch, ("action", "object"))
    assert all(torch.equal(ids[t], truth[t]) for t in truth)


def test_synthetic_task_plan():
    jobs = superb.plan_superb_jobs(seed=0, size="tiny")
    assert jobs == superb.plan_superb_jobs(seed=0, size="tiny")  # reproducible
    by_task = {}
    for j in jobs:
        by_task.setdefault(j["task"], []).append(j)
    # speakers never cross splits where the real sets keep them apart
    for task in ("speech_commands", "fluent_speech_commands", "prosody"):
        speakers = {}
        for j in by_task[task]:
            speakers.setdefault(j["split"], set()).add(j["speaker"])
        assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["valid"])
    # identification: every speaker in every split
    vox = {}
    for j in by_task["voxceleb1"]:
        vox.setdefault(j["split"], set()).add(j["speaker"])
    assert vox["train"] == vox["dev"] == vox["test"]
    # keyword clips are 1 s; prosody classes follow their pitch / speed / loudness offsets
    assert all(j["pad_to"] == 1.0 for j in by_task["speech_commands"])
    for j in by_task["prosody"]:
        assert j["amplitude"] == superb.PROSODY[j["label"]][2]
    fsc = {(j["text"], j["action"], j["object"], j["location"]) for j in by_task["fluent_speech_commands"]}
    assert fsc <= set(superb.FSC_COMMANDS)


def test_predictions_file_lists_each_utterance_with_its_labels():
    """``write_predictions``: one row per utterance over several batches, in order, each
    target's predicted and true label decoded by its encoder."""
    import csv
    import io

    from speechbrain.dataio.encoder import CategoricalEncoder

    encoders = {}
    for target, labels in (("action", ["activate", "bring"]),
                           ("object", ["lights", "socks", "juice"])):
        encoders[target] = CategoricalEncoder()
        encoders[target].update_from_iterable(labels)
    stats = utterance.ClassificationStats(["action", "object"], encoders=encoders)
    stats.append({"action": torch.tensor([[0.0, 1.0]]),
                  "object": torch.tensor([[0.0, 0.0, 5.0]])},
                 {"action": torch.tensor([1]), "object": torch.tensor([1])}, ids=["u1"])
    stats.append({"action": torch.tensor([[3.0, 1.0], [0.0, 2.0]]),
                  "object": torch.tensor([[9.0, 0.0, 0.0], [0.0, 1.0, 0.0]])},
                 {"action": torch.tensor([0, 0]), "object": torch.tensor([0, 1])},
                 ids=["u2", "u3"])
    out = io.StringIO()
    stats.write_predictions(out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows == [
        {"ID": "u1", "action_predicted": "bring", "action_true": "bring",
         "object_predicted": "juice", "object_true": "socks"},
        {"ID": "u2", "action_predicted": "activate", "action_true": "activate",
         "object_predicted": "lights", "object_true": "lights"},
        {"ID": "u3", "action_predicted": "bring", "action_true": "activate",
         "object_predicted": "socks", "object_true": "socks"}]
    assert stats.summarize()["accuracy"] == pytest.approx(100 / 3)
