"""benchmarks/speed.py: a smoke run and its methods."""

import json
import statistics

import pytest

from benchmark_scripts import load_script
from benchmark_scripts import run_script
from benchmark_scripts import tensorflow_pass_only
from keras_unikd import presets

pytestmark = tensorflow_pass_only


def test_speed_methods_come_from_the_presets():
    speed = load_script("speed")
    assert speed.METHODS == (
        "student", "kd", "dkd", "mlkd", "unikd", "unimlkd", "at", "dist", "keras_kd",
        "kd@cache", "dkd@cache", "mlkd@cache", "unikd@cache",
    )
    assert set(speed.METHODS) - set(presets.METHODS) == {"keras_kd", *speed.CACHED_METHODS}
    assert {speed.base_method(m) for m in speed.CACHED_METHODS} <= set(presets.METHODS)


def test_speed_quick(tmp_path):
    output = tmp_path / "speed.json"
    stdout = run_script("speed.py", "--quick", "--output", str(output), cwd=tmp_path)
    results = json.loads(output.read_text())
    # --quick: TensorFlow under mixed_bfloat16, PyTorch in float32; one child each.
    assert set(results["timing"]) == {"tensorflow-bf16", "torch"}
    timing = results["timing"]["tensorflow-bf16"]["fashion_mnist"]
    assert timing["batch_size"] == 16
    assert set(timing["step_seconds"]) == {"student", "kd", "unikd", "keras_kd", "unikd@cache"}
    assert all(seconds > 0 for seconds in timing["step_seconds"].values())
    rounds = timing["rounds"]
    within_rounds = [u / k for u, k in zip(rounds["unikd"], rounds["kd"])]
    assert timing["ratio_rounds"]["unikd/kd"] == pytest.approx(within_rounds)
    assert timing["ratios"]["unikd/kd"] == pytest.approx(statistics.median(within_rounds))
    assert set(timing["ratios"]) == {
        "unikd/kd", "kd/keras_kd", "unikd/student", "unikd@cache/unikd",
    }
    # The cached UniKD reads the teacher's logits and one pooled feature.
    cache = timing["caches"]["unikd@cache"]
    assert cache["examples"] == 4 * 16 and cache["build_seconds"] > 0
    assert cache["bytes_per_example_epoch"] > 4 * 10  # float32 logits and more
    assert "unikd@cache/unikd" in stdout and "target <= 0.65" in stdout
    assert set(timing["student_compute_dtype"].values()) == {"bfloat16"}
    torch = results["timing"]["torch"]["fashion_mnist"]
    assert set(torch["step_seconds"]) == set(timing["step_seconds"])
    assert all(seconds > 0 for seconds in torch["step_seconds"].values())
    assert set(torch["student_compute_dtype"].values()) == {"float32"}
    assert "| torch |" in stdout and "| tensorflow-bf16 |" in stdout
    memory = results["memory"]["fashion_mnist"]
    assert set(memory) == {"unikd"}
    assert memory["unikd"]["peak_rss_mb"] >= memory["unikd"]["models_built_rss_mb"] > 0
    assert "unikd/kd" in stdout
