"""Per-step time of the same methods for two source trees, measured in one run.

A before/after check of a change to `keras_unikd`: for each engine, one
worker process per source tree (`PYTHONPATH` set to the tree) builds the
student alone and the KD, DKD and UniKD distillers of the Fashion-MNIST
experiment's method table on ResNet32x4 -> ResNet8x4 (batch 64, random
32x32x3 inputs, 100 classes; `--quick`: ResNet8x4 -> ResNet8, batch 4,
student and KD, TensorFlow only), and warms each up. The parent then runs
timed rounds, alternating between the trees round by round (the tree that
goes first alternates too); in a round a worker times each method with one
`fit` over a fixed batch, in an order that rotates every round, from the
first step's start to the last step's end, as `speed.py` does. A method's
figure per tree is the median over rounds of the mean step time; its
after/before ratio is the median over rounds of the ratio within each round
(with its range over the rounds). The 1-minute load average is recorded at
the start and after every round.

The workers use only what both trees have (`get_model` and the Fashion-MNIST
experiment's `METHODS`), so they do not import `speed.py`, whose method list
is its own.

    git worktree add /tmp/kunikd-before eb27076
    git worktree add /tmp/kunikd-after HEAD
    python benchmarks/compare_versions.py --before /tmp/kunikd-before --after /tmp/kunikd-after
    git worktree remove /tmp/kunikd-before && git worktree remove /tmp/kunikd-after
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Engines both trees support (before the Keras train-step rewrite, the
# Distiller ran under TensorFlow and JAX only): name -> (backend, jit_compile).
ENGINES = {"tensorflow": ("tensorflow", False), "jax": ("jax", True)}
METHODS = ("student", "kd", "dkd", "unikd")
TEACHER, STUDENT, BATCH_SIZE, INPUT_SHAPE, CLASSES = "resnet32x4", "resnet8x4", 64, (32, 32, 3), 100
# --quick's pair: the same family, a fraction of the layers to trace.
QUICK_TEACHER, QUICK_STUDENT = "resnet8x4", "resnet8"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="source tree of the old version (required)")
    parser.add_argument("--after", default=ROOT, help="source tree of the new version")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=3, help="steps per timed fit")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per tree")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "speed_versions.json"))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny, TensorFlow only")
    parser.add_argument("--worker", choices=list(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--teacher", default=TEACHER, help=argparse.SUPPRESS)
    parser.add_argument("--student", default=STUDENT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.before or args.worker):
        parser.error("--before is required")
    if args.quick:
        args.engines, args.methods = ["tensorflow"], ["student", "kd"]
        args.steps, args.rounds, args.warmup_steps, args.batch_size = 1, 2, 1, 4
        args.teacher, args.student = QUICK_TEACHER, QUICK_STUDENT
    return args


# --- worker: one tree, one engine; the backend is set before keras is imported


def build_method(method, jit_compile, teacher_name=TEACHER, student_name=STUDENT):
    import keras

    from keras_unikd.experiments.fashion_mnist import METHODS as DISTILLERS
    from keras_unikd.models import get_model

    keras.utils.set_random_seed(0)
    teacher = get_model(teacher_name, num_classes=CLASSES)
    student = get_model(student_name, num_classes=CLASSES)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    if method == "student":
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        student.compile(optimizer=optimizer, loss=ce, jit_compile=jit_compile)
        return student
    model = _distiller(DISTILLERS[method], teacher, student)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return model


def _distiller(entry, teacher, student):
    """The distiller of a method-table entry, in either tree's format: `(method,
    settings)` of the method table, or `(distiller class, keyword arguments)`
    before it."""
    from keras_unikd import Distiller

    if isinstance(entry[0], type):
        distiller_class, options = entry
        return distiller_class(teacher, student, **options)
    from keras_unikd.experiments.fashion_mnist import method_model_terms

    return Distiller(teacher, student, terms=method_model_terms(entry))


def timed_fit(model, data, steps):
    """Mean seconds per step of one `fit`, from the first step's start to the last's end."""
    import keras

    stamps = []

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                stamps.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # JAX dispatches asynchronously: wait for the step
            stamps.append(time.perf_counter())

    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[StepClock()])
    return (stamps[-1] - stamps[0]) / steps


def worker(args):
    """Builds and warms up every method, then times one round per line of stdin."""
    import numpy as np
    import tensorflow as tf

    import keras_unikd

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, *INPUT_SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, size=(args.batch_size,)).astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    models = {
        m: build_method(m, ENGINES[args.worker][1], args.teacher, args.student)
        for m in args.methods
    }
    for model in models.values():
        timed_fit(model, data, args.warmup_steps)
    print(json.dumps({"keras_unikd": os.path.dirname(keras_unikd.__file__)}), flush=True)
    order = list(models)
    for line in sys.stdin:
        shift = int(line) % len(order)
        times = {m: timed_fit(models[m], data, args.steps) for m in order[shift:] + order[:shift]}
        print(json.dumps(times), flush=True)


# --- parent -----------------------------------------------------------------


class Worker:
    """A worker process for one tree; its stderr goes to a temporary file."""

    def __init__(self, args, engine, tree):
        command = [
            sys.executable, os.path.abspath(__file__), "--worker", engine,
            "--methods", *args.methods, "--steps", str(args.steps),
            "--warmup-steps", str(args.warmup_steps), "--batch-size", str(args.batch_size),
            "--teacher", args.teacher, "--student", args.student,
        ]
        env = dict(
            os.environ, PYTHONPATH=tree, KERAS_BACKEND=ENGINES[engine][0], TF_CPP_MIN_LOG_LEVEL="2"
        )
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True,
        )

    def receive(self):
        """The worker's next JSON line (skipping anything else it printed)."""
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.process.wait()
        self.stderr.seek(0)
        raise RuntimeError(f"worker failed:\n{self.stderr.read()[-4000:]}")

    def time_round(self, index):
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self):
        self.process.stdin.close()
        self.process.wait()
        self.stderr.close()


def load():
    return os.getloadavg()[0]


def compare(args, engine, trees):
    """Times both trees' workers under one engine in alternating rounds."""
    workers = {name: Worker(args, engine, tree) for name, tree in trees.items()}
    try:
        # Both build and warm up at the same time (untimed), then wait for rounds.
        packages = {name: w.receive()["keras_unikd"] for name, w in workers.items()}
        rounds = {name: {m: [] for m in args.methods} for name in workers}
        loads = [load()]
        for index in range(args.rounds):
            names = list(workers) if index % 2 == 0 else list(workers)[::-1]
            for name in names:
                for method, seconds in workers[name].time_round(index).items():
                    rounds[name][method].append(seconds)
            loads.append(load())
            print(f"  round {index + 1}/{args.rounds} done (load {loads[-1]:.2f})", flush=True)
    finally:
        for w in workers.values():
            w.close()
    ratio_rounds = {
        m: [a / b for a, b in zip(rounds["after"][m], rounds["before"][m])] for m in args.methods
    }
    return {
        "keras_unikd": packages,
        "step_seconds": {
            name: {m: statistics.median(times) for m, times in per_tree.items()}
            for name, per_tree in rounds.items()
        },
        "rounds": rounds,
        "ratios": {m: statistics.median(r) for m, r in ratio_rounds.items()},
        "ratio_rounds": ratio_rounds,
        "load_1min": loads,
    }


def commit(tree):
    completed = subprocess.run(
        ["git", "-C", tree, "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    return completed.stdout.strip()[:100]


def markdown(results):
    lines = [
        "| engine | method | before (ms) | after (ms) | after/before |",
        "|---|---|---|---|---|",
    ]
    for engine, entry in results["engines"].items():
        for m in results["methods"]:
            spread = entry["ratio_rounds"][m]
            lines.append(
                f"| {engine} | {m} | {1000 * entry['step_seconds']['before'][m]:.1f} "
                f"| {1000 * entry['step_seconds']['after'][m]:.1f} "
                f"| {entry['ratios'][m]:.2f} ({min(spread):.2f}-{max(spread):.2f}) |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    engines = {}
    for engine in args.engines:
        print(f"timing {engine} (load {load():.2f}) ...", flush=True)
        engines[engine] = compare(args, engine, trees)
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "quick": args.quick,
        "pair": f"{args.teacher} -> {args.student}",
        "batch_size": args.batch_size,
        "methods": args.methods,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "warmup_steps": args.warmup_steps,
        "trees": {name: {"path": tree, "commit": commit(tree)} for name, tree in trees.items()},
        "engines": engines,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    table = markdown(results)
    with open(args.output.replace(".json", ".md"), "w") as handle:
        handle.write(table)
    print(table)


if __name__ == "__main__":
    main()
