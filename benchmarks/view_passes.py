"""Two-view steps: one concatenated forward pass per network, or one pass per view?

A two-view batch `((weak, strong), labels)` (MLKD, UniMLKD) needs each network's
outputs on both views. The `Distiller` runs the frozen teacher once on the
concatenated views (in inference mode that equals two passes exactly) and the
student once per view (in training mode each view then gets its own
batch-normalisation statistics, as in the MLKD and UniMLKD reference code). This
script times full training steps of UniMLKD (MLKD + UniKD's terms on both
views) three ways on the same models and batch:

- `teacher-concat` (what the Distiller does): teacher concatenated, student per view;
- `per-view`: teacher and student each once per view;
- `all-concat`: teacher and student each once on the concatenated views (the
  student's batch statistics then mix the two views: not the reference's
  training, measured for the comparison only).

The variants run in interleaved rounds (the order rotating), and each ratio
to `teacher-concat` is the median of within-round ratios. Writes
`benchmarks/results/view_passes.json` and `.md`.

    python benchmarks/view_passes.py            # ResNet32x4 -> ResNet8x4, batch 64 (~5 min)
    python benchmarks/view_passes.py --quick    # smoke run
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import keras
import numpy as np
from keras import ops

from keras_unikd import Distiller
from keras_unikd.models import fashion_student
from keras_unikd.models import fashion_teacher
from keras_unikd.models import get_model
from keras_unikd.presets.recipes import CIFAR_STUDENT_FEATURES
from keras_unikd.presets.recipes import TEACHER_FEATURES
from keras_unikd.presets.recipes import layer_names
from keras_unikd.teacher_source import OnlineTeacher

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
VARIANTS = ("teacher-concat", "per-view", "all-concat")


class PerViewTeacher(OnlineTeacher):
    """The teacher source that runs the teacher once per view."""

    def _forward(self, weak, strong):
        if strong is None:
            return super()._forward(weak, None)
        return super()._forward(weak, None) + super()._forward(strong, None)


class ConcatenatedStudent(Distiller):
    """The student once on both views concatenated (batch statistics mix the views)."""

    def _student_outputs(self, inputs, training):
        weak, strong = self._views(inputs)
        batch = ops.shape(weak)[0]
        both = self._student_forward(ops.concatenate([weak, strong], axis=0), training)

        def part(view):
            return {
                "logits": view(both["logits"]),
                "features": {path: view(f) for path, f in both["features"].items()},
            }

        outputs = part(lambda tensor: tensor[:batch])
        outputs["strong"] = part(lambda tensor: tensor[batch:])
        return outputs


# Variant -> (Distiller class, teacher source class).
CLASSES = {
    "teacher-concat": (Distiller, OnlineTeacher),
    "per-view": (Distiller, PerViewTeacher),
    "all-concat": (ConcatenatedStudent, OnlineTeacher),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "view_passes.json"))
    parser.add_argument("--quick", action="store_true", help="smoke run: Fashion-MNIST CNNs")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.batch_size = 1, 2, 8
    return args


def build(variant, quick):
    keras.utils.set_random_seed(0)
    if quick:
        teacher, student = fashion_teacher((28, 28, 1), 10), fashion_student((28, 28, 1), 10)
        features = dict(teacher_features=["stage1_preact"], student_features=["stage1", "pool"])
    else:
        teacher, student = get_model("resnet32x4", num_classes=100), get_model(
            "resnet8x4", num_classes=100
        )
        features = dict(
            teacher_features=layer_names("resnet32x4", TEACHER_FEATURES),
            student_features=layer_names("resnet8x4", CIFAR_STUDENT_FEATURES),
        )
    distiller_class, source_class = CLASSES[variant]
    model = distiller_class(
        source_class(teacher),
        student,
        logits_loss="mlkd",
        distribution_temperature=4.0,
        warmup_epochs=0,
        **features,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=False)
    return model


def two_view_batch(quick, batch_size):
    import tensorflow as tf

    shape, classes = ((28, 28, 1), 10) if quick else ((32, 32, 3), 100)
    rng = np.random.default_rng(0)
    weak, strong = (rng.standard_normal((batch_size, *shape)).astype("float32") for _ in "ws")
    labels = rng.integers(0, classes, size=(batch_size,)).astype("int32")
    return tf.data.Dataset.from_tensors(((weak, strong), labels)).repeat()


def timed_fit(model, data, steps):
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps


def main(argv=None):
    args = parse_args(argv)
    data = two_view_batch(args.quick, args.batch_size)
    models = {variant: build(variant, args.quick) for variant in VARIANTS}
    for model in models.values():
        timed_fit(model, data, 2)
    rounds = {variant: [] for variant in VARIANTS}
    for index in range(args.rounds):
        shift = index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            rounds[variant].append(timed_fit(models[variant], data, args.steps))
    ratios = {
        variant: statistics.median(
            v / base for v, base in zip(rounds[variant], rounds["teacher-concat"])
        )
        for variant in VARIANTS
    }
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "backend": keras.backend.backend(),
        "pair": "fashion_mnist (quick)" if args.quick else "resnet32x4 -> resnet8x4",
        "batch_size": args.batch_size,
        "quick": args.quick,
        "step_seconds": {v: statistics.median(times) for v, times in rounds.items()},
        "ratio_to_teacher_concat": ratios,
        "rounds": rounds,
    }
    lines = [
        f"UniMLKD training step, {results['pair']}, batch {args.batch_size} per view, "
        f"{results['backend']}, {results['machine']}, {results['date']}",
        "",
        "| variant | step (ms) | / teacher-concat |",
        "|---|---|---|",
    ]
    for variant in VARIANTS:
        lines.append(
            f"| {variant} | {1000 * results['step_seconds'][variant]:.0f} | "
            f"{ratios[variant]:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    with open(os.path.splitext(args.output)[0] + ".md", "w") as handle:
        handle.write(table)
    print(table)
    return results


if __name__ == "__main__":
    main()
