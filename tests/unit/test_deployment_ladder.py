"""The deployment ladder (benchmarks/deployment_ladder.py) on a tiny wav2vec2: the budget rungs'
pruned model meets the FLOPs target, follows the shape of a trained run when given one, keeps the
first conv layer in float where its name says so; the table is what its record says; a run's
record round-trips."""

import contextlib
import importlib.util
import io
import json
import statistics
from pathlib import Path

import onnx
import pytest
import torch
from transformers import AutoModel

from s3brain.utils.efficiency import count_flops

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("deployment_ladder",
                                              ROOT / "benchmarks" / "deployment_ladder.py")
ladder = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ladder)

TARGET = 0.33
#: how far under the target the counted FLOPs may land: the budget left after the scaled shape
#: is filled unit by unit, so less than one unit's FLOPs stays unused (an FFN unit: 0.05 % of
#: the tiny model's FLOPs on 1 s, a channel of the last conv layer 0.2 %)
TOLERANCE = 0.005
ONE_SECOND = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    return AutoModel.from_config(ladder.tiny_config()).eval()


def counted(model):
    """FLOPs of ``model`` on 1 s of audio, by the project's counter."""
    return count_flops(lambda wav: model(wav).last_hidden_state, ONE_SECOND)


def test_budget_pruned_meets_target(dense):
    model, kept, ratio = ladder.budget_pruned(dense, TARGET, seconds=1)
    measured = counted(model) / counted(dense)
    assert TARGET - TOLERANCE <= measured <= TARGET
    assert ratio == pytest.approx(measured)
    assert list(model.config.conv_dim) == kept["conv"]
    assert model.config.layer_intermediate_sizes == kept["ffn"]
    # data-free: every group keeps about the same share (the CNN is 3/4 of this model's FLOPs:
    # a layer first cut must not keep being cut); the rest of the budget, filled unit by unit,
    # goes to the units that fit, a 32-channel layer's unit 3 % of it
    shares = [c / 32 for c in kept["conv"]] + [u / 64 for u in kept["ffn"]]
    assert max(shares) - min(shares) <= 0.15, kept


def _trained_run(folder, dense_folder):
    """A budget-pruning run's folder as the recipe leaves it: results.json naming the dense
    backbone, inference/hyperparams.yaml with the shrunk backbone's config (hyperpyyaml tags);
    block 0 keeps 50 % of its FFN units, block 1 10 %."""
    (folder / "inference").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"ssl_hub": str(dense_folder)}))
    (folder / "inference" / "hyperparams.yaml").write_text(
        "sample_rate: 16000\n"
        "encoder: !new:s3brain.deployment.modules.CTCEncoder\n"
        "    backbone: !new:s3brain.deployment.modules.Backbone\n"
        "        config:\n"
        "          model_type: wav2vec2\n"
        "          num_attention_heads: 2\n"
        "          intermediate_size: 64\n"
        "          conv_dim: [24, 8, 32]\n"
        "          layer_intermediate_sizes: [32, 6]\n"
        "          layer_attention_heads: [2, 1]\n"
        "    blank_index: 0\n"
        "tokenizer: !new:s3brain.deployment.modules.CTCLabels\n"
        "    separator: ''\n")
    return folder


def test_transferred_shape_follows_trained_shares(dense, tmp_path):
    ladder.tiny_config().save_pretrained(tmp_path / "dense")
    run = _trained_run(tmp_path / "run", tmp_path / "dense")
    shape = ladder.trained_shape(run)  # the run folder: its inference/ and results.json
    assert shape["kept"] == {"conv": [24, 8, 32], "heads": [2, 1], "ffn": [32, 6]}
    assert shape["shares"]["conv"] == [0.75, 0.25, 1.0]
    assert shape == ladder.trained_shape(run / "inference")
    # a save_pretrained folder of the shrunk backbone, its dense backbone given
    config = {"model_type": "wav2vec2", "num_attention_heads": 2, "intermediate_size": 64,
              "conv_dim": [24, 8, 32], "layer_intermediate_sizes": [32, 6],
              "layer_attention_heads": [2, 1]}
    (tmp_path / "shrunk").mkdir()
    (tmp_path / "shrunk" / "config.json").write_text(json.dumps(config))
    assert ladder.trained_shape(tmp_path / "shrunk", dense=tmp_path / "dense") == shape

    shares = ladder.transferred_shares(shape["shares"], dense.config)
    model, kept, _ = ladder.budget_pruned(dense, TARGET, seconds=1, shares=shares)
    measured = counted(model) / counted(dense)
    assert TARGET - TOLERANCE <= measured <= TARGET
    assert kept["ffn"][0] > 2 * kept["ffn"][1], kept  # 50 % against 10 % in the trained run
    assert kept["conv"][0] > kept["conv"][1] and kept["conv"][2] > kept["conv"][1], kept
    assert kept["heads"][0] >= kept["heads"][1]


def test_trained_shape_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither config.json nor hyperparams.yaml"):
        ladder.trained_shape(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"conv_dim": [8]}))
    with pytest.raises(ValueError, match="not a shrunk model"):
        ladder.trained_shape(tmp_path)


def _row(table, rung):
    """The cells of ``rung``'s row of a markdown table."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == rung:
            return cells
    raise KeyError(rung)


def test_ladder_table_from_record():
    record = {"threads": [1, 2], "rungs": {
        "dense": {"flops": 150e9, "ms": {"1": {"median": 1200.0}, "2": {"median": 700.0}}},
        "budget 0.33": {"flops": 49.5e9, "ms": {"1": {"median": 400.0},
                                                "2": {"median": 280.0}}}}}
    table = ladder.ladder_table(record)
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header == ["rung", "GFLOPs", "FLOPs red.", "ms 1t", "speed-up 1t", "ms 2t",
                      "speed-up 2t", "speed-up / FLOPs red. (1st)"]
    row = _row(table, "budget 0.33")
    assert row[1:] == ["49.50", "3.03x", "400", f"{1200 / 400:.2f}x", "280",
                       f"{700 / 280:.2f}x", f"{(1200 / 400) / (150 / 49.5):.2f}"]
    assert _row(table, "dense")[4] == "1.00x"
    with_wer = ladder.ladder_table(record, {"budget 0.33": "12.34"}, "WER")
    assert with_wer.splitlines()[0].endswith("| WER |")
    assert _row(with_wer, "budget 0.33")[-1] == "12.34" and _row(with_wer, "dense")[-1] == ""


def test_only_checks_rung_names():
    assert {"dense int8 + CNN int8 (layer 0 float)", "downsampling x2", "budget 0.33 int8",
            "budget 0.33 int8 + CNN int8 (layer 0 float)"} <= set(ladder.RUNGS)
    args, _ = ladder.parse_arguments(["--target-flops-ratio", "0.5", "0.25", "--only",
                                      "budget 0.5", "budget 0.25 int8", "--budget-from", "r"])
    assert args.only == ["budget 0.5", "budget 0.25 int8"]
    assert args.budget_from == {0.5: Path("r"), 0.25: Path("r")}
    for wrong in (["--target-flops-ratio", "0.5", "--only", "budget 0.33"],
                  ["--target-flops-ratio", "0.5", "0.25", "--budget-from", "a", "b", "c"]):
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
            ladder.parse_arguments(wrong)


def _conv_int8_inputs(model_bytes):
    """Per Conv node in graph order: whether its weight comes through a DequantizeLinear (the
    convolution is in static int8)."""
    graph = onnx.load_from_string(model_bytes).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    return [producers.get(node.input[1]) == "DequantizeLinear"
            for node in graph.node if node.op_type == "Conv"]


def test_cnn_int8_rungs_keep_layer_0_float(tmp_path):
    only = ["dense int8 + CNN int8", "dense int8 + CNN int8 (layer 0 float)",
            "budget 0.33 int8 + CNN int8 (layer 0 float)"]
    args, _ = ladder.parse_arguments(["--config-tiny", "--seconds", "1", "--only", *only])
    rungs, wav, budgets = ladder.build(args, tmp_path)
    assert list(rungs) == only and budgets[TARGET]["flops_ratio"] <= TARGET
    cnn_convs = len(ladder.tiny_config().conv_dim)
    assert _conv_int8_inputs(rungs[only[0]][0].cnn_model)[:cnn_convs] == [True] * cnn_convs
    for name in only[1:]:
        assert _conv_int8_inputs(rungs[name][0].cnn_model)[:cnn_convs] == [False, True, True]
        assert rungs[name][0](wav).shape[:2] == rungs[only[0]][0](wav).shape[:2]
    assert rungs[only[2]][1] < rungs[only[0]][1]  # the pruned model's FLOPs


def test_record_round_trips(tmp_path):
    record_path = tmp_path / "ladder.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ladder.main(["--config-tiny", "--seconds", "1", "--repeats", "2", "--threads", "1",
                     "--target-flops-ratio", "0.5", "0.33", "--only", "dense", "budget 0.5",
                     "budget 0.33", "--record", str(record_path)])
    record = json.loads(record_path.read_text())
    assert list(record["rungs"]) == ["dense", "budget 0.5", "budget 0.33"]
    assert ladder.ladder_table(record) in out.getvalue()
    assert str(tmp_path) not in record["command"]
    assert '--only dense "budget 0.5" "budget 0.33"' in record["command"]
    assert set(record["machine"]) >= {"cpu_count", "processor", "torch", "onnxruntime",
                                      "transformers"}
    assert (record["seconds"], record["repeats"], record["threads"]) == (1.0, 2, [1])
    dense = record["rungs"]["dense"]
    for target in (0.5, 0.33):
        budget = record["rungs"][f"budget {target:g}"]
        assert len(budget["kept"]["heads"]) == 2 and len(budget["kept"]["conv"]) == 3
        assert target - TOLERANCE <= budget["flops"] / dense["flops"] <= target
        assert budget["flops"] / dense["flops"] == pytest.approx(budget["flops_ratio"],
                                                                 abs=1e-4)
        assert f"conv channels per layer: {budget['kept']['conv']}" in out.getvalue()
    assert sum(record["rungs"]["budget 0.5"]["kept"]["ffn"]) > sum(
        record["rungs"]["budget 0.33"]["kept"]["ffn"])
    for rung in record["rungs"].values():
        timing = rung["ms"]["1"]
        assert len(timing["repeats"]) == 2
        assert timing["median"] == statistics.median(timing["repeats"])
