"""Plots of the accuracy benchmark: paired differences, training curves, output gaps.

Reads `benchmarks/results/accuracy.json` and the seed-0 students saved next
to it by `benchmarks/accuracy.py`, evaluates them against the cached teacher
on the test set, and writes PNGs to `benchmarks/results/`: the paired
differences with their 95% intervals, the seed-0 training curves, the CDF
of the teacher-student softmax gap, the logit correlation gaps, and each
method's accuracy against its training cost per step
(`<results name>_vs_cost.png`; `--cost-only`: that plot alone, for results
files without saved students).

    python benchmarks/plots.py
    python benchmarks/plots.py --results benchmarks/results/accuracy_baselines.json --cost-only
"""

import argparse
import dataclasses
import json
import os

import keras

from keras_unikd import analysis
from keras_unikd.data import FASHION_MNIST_CLASSES
from keras_unikd.data import load_fashion_mnist
from keras_unikd.experiments import fashion_mnist as recipe_lib

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=os.path.join(RESULTS_DIR, "accuracy.json"))
    parser.add_argument("--output-dir", default=None, help="default: next to --results")
    parser.add_argument(
        "--correlation-methods", nargs="+", default=["kd", "unikd"], help="Fig. 5 panels"
    )
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="write only <results name>_vs_cost.png (results without saved students)",
    )
    return parser.parse_args(argv)


def cpu_seconds_per_step(run, recipe):
    """A run's CPU-seconds per training step: its process CPU time over its
    steps (it includes the per-epoch evaluation, the same for every method)."""
    steps = -(-recipe["subset"] // recipe["batch_size"]) * len(run["history"]["loss"])
    return run["cpu_seconds"] / steps


def plot_accuracy_vs_cost(methods, recipe, path):
    """Final test top-1 (mean and std over seeds) against CPU-seconds per step,
    one point per method, the cost on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(7.0, 4.8))
    for name, entry in methods.items():
        accuracy = [100 * run["last_accuracy"] for run in entry["runs"]]
        cost = np.mean([cpu_seconds_per_step(run, recipe) for run in entry["runs"]])
        axis.errorbar(cost, np.mean(accuracy), yerr=np.std(accuracy), fmt="o", capsize=3)
        axis.annotate(name, (cost, np.mean(accuracy)), textcoords="offset points", xytext=(5, 4))
    axis.set_xscale("log")
    axis.set_xlabel("CPU-seconds per training step (log scale)")
    axis.set_ylabel("final test top-1 (%): mean and std over seeds")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_paired_differences(comparisons, path):
    """Each paired difference's mean and 95% interval, one row per comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(comparisons)[::-1]
    figure, axis = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.2))
    for row, name in enumerate(names):
        c = comparisons[name]
        axis.plot(c["differences"], [row] * c["n"], "o", color="0.7", markersize=4)
        if c["ci_low"] is not None:
            axis.plot([c["ci_low"], c["ci_high"]], [row, row], color="C0", linewidth=2)
        axis.plot([c["mean"]], [row], "D", color="C0")
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("a - b, final test top-1 (percentage points): seeds, mean, 95% interval")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    with open(args.results) as handle:
        results = json.load(handle)
    output_dir = args.output_dir or os.path.dirname(args.results)
    os.makedirs(output_dir, exist_ok=True)
    methods = results["methods"]
    stem = os.path.splitext(os.path.basename(args.results))[0]
    cost_plot = os.path.join(output_dir, f"{stem}_vs_cost.png")
    plot_accuracy_vs_cost(methods, results["recipe"], cost_plot)
    if args.cost_only:
        return
    if results.get("comparisons"):
        plot_paired_differences(
            results["comparisons"], os.path.join(output_dir, "paired_differences.png")
        )
    histories = {method: entry["runs"][0]["history"] for method, entry in methods.items()}
    analysis.plot_training_curves(histories, os.path.join(output_dir, "training_curves.png"))

    dataset = load_fashion_mnist(verbose=False)
    count = results["test_examples"]  # the --quick runs use the first ones only
    dataset = dataclasses.replace(
        dataset, x_test=dataset.x_test[:count], y_test=dataset.y_test[:count]
    )
    _, _, test = recipe_lib.make_pipelines(dataset, recipe_lib.Recipe(**results["recipe"]), seed=0)
    teacher = keras.models.load_model(results["teacher"]["path"])
    teacher_logits = analysis.predict_logits(teacher, test)
    students_dir = os.path.join(os.path.dirname(args.results), results["students_dir"])
    student_logits = {
        method: analysis.predict_logits(
            keras.models.load_model(os.path.join(students_dir, f"{method}.keras")), test
        )
        for method in methods
    }
    gaps = {
        method: analysis.softmax_gaps_from_logits(teacher_logits, logits)
        for method, logits in student_logits.items()
    }
    analysis.plot_softmax_gap_cdf(gaps, os.path.join(output_dir, "softmax_gap_cdf.png"))
    correlations = {
        method: analysis.correlation_gap_from_logits(teacher_logits, student_logits[method])
        for method in args.correlation_methods
        if method in student_logits
    }
    class_names = FASHION_MNIST_CLASSES if dataset.name == "fashion_mnist" else None
    analysis.plot_correlation_gaps(
        correlations, os.path.join(output_dir, "correlation_gap.png"), class_names=class_names
    )
    summary = {
        "mean_softmax_gap": {m: float(g.mean()) for m, g in gaps.items()},
        "mean_correlation_gap": {m: float(c.mean()) for m, c in correlations.items()},
    }
    with open(os.path.join(output_dir, "analysis.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
