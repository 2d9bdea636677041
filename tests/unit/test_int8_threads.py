"""benchmarks/int8_threads.py on a tiny wav2vec2: onnxruntime's profile parsed into operator
times that add up, the int8 graph's integer operators found where they are and nowhere else, the
split path timed step by step without changing its output, and tables drawn from the record."""

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_threads.py"
spec = importlib.util.spec_from_file_location("int8_threads", SCRIPT)
int8_threads = importlib.util.module_from_spec(spec)
spec.loader.exec_module(int8_threads)

# what onnxruntime's dynamic int8 export runs its linear layers as (after its graph fusions)
INTEGER_MATMULS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The record of a run on the tiny model, its file, and the models it measured."""
    path = tmp_path_factory.mktemp("record") / "int8_threads.json"
    built, build = {}, int8_threads.build

    def keep_built(*args):
        built.update(build(*args))
        return built

    int8_threads.build = keep_built
    try:
        record = int8_threads.main(["--model", "tiny", "--seconds", "0.5", "--repeats", "1",
                                    "--record", str(path)])
    finally:
        int8_threads.build = build
    return record, path, built


def test_operator_times_add_up_to_the_profiled_runs(measured):
    record, *_ = measured
    for model in ("fp32", "int8"):
        for threads in ("1", "2"):
            times = record["operators"][model][threads]
            summed = sum(row["ms"] for row in times["ops"].values())
            assert summed == pytest.approx(times["node_ms"], abs=1e-3)
            assert sum(times["parts"].values()) == pytest.approx(summed, abs=1e-3)
            assert set(times["parts"]) == {"CNN", "transformer"}
            # kernels are never more than the run; at one thread, most of it (at two, a stall
            # of the helper thread on a busy machine may fall between kernels)
            assert summed <= times["run_ms"]
            assert threads == "2" or summed >= 0.5 * times["run_ms"]
            assert times["runs"] == 1
            assert all(0 <= row["multi_thread_ms"] <= row["ms"] + 1e-9
                       for row in times["ops"].values())
        # one thread: no other thread to help
        assert not any(row["multi_thread_ms"] for row in
                       record["operators"][model]["1"]["ops"].values())


def test_int8_profile_has_integer_matmuls_and_fp32_none(measured):
    record, *_ = measured
    for threads in ("1", "2"):
        int8 = set(record["operators"]["int8"][threads]["ops"])
        fp32 = set(record["operators"]["fp32"][threads]["ops"])
        assert int8 & INTEGER_MATMULS
        assert not fp32 & int8_threads.INTEGER_OPS
        assert "Conv" in fp32 and "Conv" in int8  # the CNN stays in float


def test_op_times_leaves_out_the_warm_up_and_counts_help_per_call():
    def node(op, ts, dur, helpers_ran):
        return {"cat": "Node", "name": f"/encoder/{op}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "thread_scheduling_stats": {
                    "main_thread": {}, "sub_threads": {"7": {"num_run": helpers_ran}}}}}

    run = {"cat": "Session", "name": "model_run", "dur": 100}
    events = [dict(run, ts=0), node("MatMul", 10, 60, 1),
              dict(run, ts=200), node("MatMul", 210, 40, 1), node("Softmax", 250, 20, 3),
              dict(run, ts=400), node("MatMul", 410, 30, 4), node("Softmax", 450, 10, 4)]
    times = int8_threads.op_times(events)
    # the counts are cumulative: the second run's MatMul was not helped (1 -> 1), its Softmax
    # was (1 -> 3); the third run's MatMul was (3 -> 4), its Softmax was not
    assert times["ops"]["MatMul"] == {"ms": 0.035, "calls": 1.0, "multi_thread_ms": 0.015}
    assert times["ops"]["Softmax"] == {"ms": 0.015, "calls": 1.0, "multi_thread_ms": 0.01}
    assert times["node_ms"] == 0.05 and times["run_ms"] == 0.1 and times["runs"] == 2
    with pytest.raises(ValueError, match="no model_run"):
        int8_threads.op_times(events[:2])


def test_the_timed_split_path_gives_the_split_models_output(measured):
    record, _, built = measured
    split, wav = built["split"], built["wav"]
    reference = split(wav)
    for variant in ("allow_spinning 0", "dynamic_block_base 4"):
        out, steps = int8_threads.timed_split(int8_threads.with_sessions(split, 2, variant), wav)
        assert torch.allclose(out, reference, atol=1e-5)
        assert len(steps) == 3 and all(ms > 0 for ms in steps)
    assert reference.shape[1] == record["split"]["kept_frames"] < built["frames"]
    assert record["split"]["kept_frames"] == pytest.approx(0.6381 * built["frames"], abs=1)
    assert split.threads == 1  # the copies did not touch it


def test_record_and_tables_agree(measured):
    record, path, _ = measured
    assert json.loads(path.read_text()) == record
    command = record["command"]
    assert command.startswith("./s3env python benchmarks/int8_threads.py --model tiny")
    assert str(path.parent) not in command  # outside the repository: its last two parts
    assert command.endswith(f"--record .../{path.parent.name}/int8_threads.json")
    assert record["machine"]["cpu_count"] >= 1 and record["machine"]["onnxruntime"]
    assert record["onnx_session"]["execution_mode"] == "ORT_SEQUENTIAL"
    variants = {(r["model"], r["threads"], r["options"]) for r in record["wall"]}
    assert len(variants) == 2 * (1 + len(int8_threads.VARIANTS))
    assert {(r["threads"], r["torch_threads"]) for r in record["split"]["rows"]} == {
        (1, 1), (2, 2), (2, 1)}

    changed = copy.deepcopy(record)
    op = next(iter(changed["operators"]["int8"]["2"]["ops"].keys() & INTEGER_MATMULS))
    two = changed["operators"]["int8"]["2"]
    # the op's kernel time is part of the path's: both grow (else, on a loaded machine where
    # int8 happened to scale past 2x, no time would be lost and the summary would name no op)
    two["node_ms"] += 4321.0 - two["ops"][op]["ms"]
    two["ops"][op]["ms"] = 4321.0
    wall = next(r for r in changed["wall"]
                if (r["model"], r["threads"], r["options"]) == ("int8", 2, "allow_spinning 0"))
    wall["ms"] = 987.6
    changed["split"]["rows"][-1]["torch_ms"] = 55.55
    text = int8_threads.tables(changed)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    first_op = rows[1]  # after the header: the largest int8 time at two threads comes first
    assert first_op.startswith(f"| {op} |") and "| 4321.0 |" in first_op
    assert any(line.startswith("| 2 | allow_spinning 0 |") and "| 987.6 |" in line
               for line in rows)
    assert any("| 55.5 |" in line or "| 55.6 |" in line for line in rows)
    for model in ("fp32", "int8"):
        for threads in ("1", "2"):
            for name in record["operators"][model][threads]["ops"]:
                assert any(line.startswith(f"| {name} |") for line in rows)
    assert f"{op} (" in text.split("## Summary")[1]  # now the summary names it first
    assert int8_threads.tables(record) != text
