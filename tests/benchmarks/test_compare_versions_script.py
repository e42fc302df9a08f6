"""benchmarks/compare_versions.py: a smoke run comparing this tree with itself."""

import json
import os
import statistics

import pytest

from benchmark_scripts import ROOT
from benchmark_scripts import run_script
from benchmark_scripts import tensorflow_pass_only

pytestmark = tensorflow_pass_only


def test_compare_versions_quick(tmp_path):
    """Both trees are this one here: each worker imports keras_unikd from its PYTHONPATH."""
    output = tmp_path / "versions.json"
    stdout = run_script(
        "compare_versions.py", "--quick", "--before", ROOT, "--output", str(output), cwd=tmp_path
    )
    results = json.loads(output.read_text())
    assert results["pair"] == "resnet8x4 -> resnet8"  # --quick's small pair
    entry = results["engines"]["tensorflow"]
    assert entry["keras_unikd"] == {
        "before": os.path.join(ROOT, "keras_unikd"), "after": os.path.join(ROOT, "keras_unikd")
    }
    rounds = entry["rounds"]
    assert all(len(rounds[tree][m]) == 2 for tree in rounds for m in ("student", "kd"))
    within_rounds = [a / b for a, b in zip(rounds["after"]["kd"], rounds["before"]["kd"])]
    assert entry["ratio_rounds"]["kd"] == pytest.approx(within_rounds)
    assert entry["ratios"]["kd"] == pytest.approx(statistics.median(within_rounds))
    assert len(entry["load_1min"]) == 3
    assert "| tensorflow | kd |" in stdout
