"""`keras-unikd`: one command per experiment of the UniKD paper.

```
keras-unikd list-presets
keras-unikd train-teacher --preset cifar100_resnet32x4_resnet8x4
keras-unikd distill --preset cifar100_resnet32x4_resnet8x4 --method unikd
keras-unikd distill --preset cifar100_resnet32x4_resnet8x4_mlkd --logit-standardization
keras-unikd cache-teacher --preset cifar100_resnet32x4_resnet8x4 \\
    --teacher runs/cifar100_resnet32x4_resnet8x4/teacher/best_teacher.keras --cache-dir cache/r32x4
```

`distill --method` is one of `keras_unikd.presets.METHODS`; without it, the
preset's own method (`Preset.method`, e.g. `unimlkd` for
`cifar100_resnet32x4_resnet8x4_unimlkd`), else `unikd`.
`--logit-standardization` runs the method's `+ls` variant
(`keras_unikd.presets.VARIANTS`: logit standardization with the reference's
CIFAR-100 settings). The two-view methods (`TWO_VIEW_METHODS`: `mlkd`,
`unimlkd`) train on `((weak, strong), labels)` batches
(`cifar100_datasets(two_views=True)`); validation stays single view.

Every run writes into its own folder under `--output-dir` (default
`runs/<preset>`): `teacher/` for `train-teacher`, `<method>/` for `distill`
(`<method>+ls/` with `--logit-standardization`).
A run folder holds

- `backup/`: `keras.callbacks.BackupAndRestore` state, saved every epoch;
  running the same command again resumes from the last finished epoch;
- `log.csv`: one row per epoch with every loss term, the metrics, the
  validation metrics and `epoch_seconds`;
- `tensorboard/`: TensorBoard logs;
- `best_<model>.keras` (highest `val_accuracy`) and `last_<model>.keras`,
  where `<model>` is `teacher` or `student` (the student alone, without
  the distillation modules); the best is written atomically by
  `keras_unikd.callbacks.StudentCheckpoint`, which keeps its value and
  epoch in `best_<model>.keras.json` and reads them back on resume;
- `results.json`: best and last top-1 (%), seconds per epoch, the preset,
  the method (with `+ls` for logit standardization), `views` (1 or 2),
  `logit_standardization`, the epochs, the backend and the published
  number of that method.

`cache-teacher` writes a teacher-output cache (`keras_unikd.teacher_cache`)
for the distiller that `distill` would build for the preset and method: the
teacher's outputs on every view of the keyed CIFAR-100 training pipeline
(`keras_unikd.data.keyed.CIFAR100_KEYED_OPTIONS`, seeded by `--seed`, one
view or two as the method reads) for `--epochs` epochs; a method whose terms
need the teacher online (`fitnet`, a teacher-side aggregator) is an error
that names the term. Running it again resumes an interrupted build.
`distill --teacher-cache DIR` trains from such a cache: the keyed views of
the same `--seed` (default 0, as `cache-teacher`'s) with the teacher's
outputs read from `DIR` instead of computed; the cache is checked against
the teacher, data, seed, method and epochs first, and a resumed run
starts the keyed pipeline at the epoch `backup/` resumes at.

The Keras backend is chosen with `--backend` (or `KERAS_BACKEND`). Keras
reads it once, when it is first imported, and importing the `keras_unikd`
package (this module included) imports Keras; so when Keras is already
loaded with another backend the command re-runs itself in a fresh Python
process with `KERAS_BACKEND` set.
"""

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys

from keras_unikd.presets import METHODS
from keras_unikd.presets import TWO_VIEW_METHODS
from keras_unikd.presets import VARIANTS
from keras_unikd.teacher_cache import DTYPES

BACKENDS = ("tensorflow", "jax")
STRATEGIES = ("none", "mirrored")
DEFAULT_OUTPUT_ROOT = "runs"
TEACHER_DIR = "teacher"
KNOWN_TRAIN_SIZES = {"cifar100": 50_000, "imagenet": 1_281_167}


class CLIError(Exception):
    """An error reported to the user as `error: <message>` with exit code 2."""


# ----------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------


def _add_data_arguments(parser):
    """The options every preset command shares: the preset, its data, the backend."""
    parser.add_argument(
        "--preset", required=True, help="experiment name (see `keras-unikd list-presets`)"
    )
    parser.add_argument("--data-dir", help="TensorFlow Datasets data directory")
    parser.add_argument(
        "--take", type=int, help="use only the first N examples of each split (smoke runs)"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, help="Keras backend (default: $KERAS_BACKEND or Keras' own)"
    )


def _add_run_arguments(parser):
    _add_data_arguments(parser)
    parser.add_argument(
        "--epochs", type=int, help="number of epochs (default: the recipe's); the "
        "learning-rate decay epochs are scaled to it"
    )
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    parser.add_argument(
        "--output-dir", help=f"run root (default: {DEFAULT_OUTPUT_ROOT}/<preset>)"
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="none",
        help="'mirrored': tf.distribute.MirroredStrategy over the visible GPUs "
        "(TensorFlow backend only)",
    )
    parser.add_argument(
        "--seed", type=int,
        help="seed of the weights, the sampling noise and the data order and "
        "augmentation (default: unseeded, which keeps the input pipeline fastest)",
    )
    parser.add_argument(
        "--verbose", type=int, choices=(0, 1, 2),
        help="Keras verbosity (default: 1, the progress bar, on a terminal; 2 otherwise)",
    )


def _add_method_arguments(parser):
    parser.add_argument(
        "--method", choices=METHODS,
        help="the distillation method (default: the preset's own, else unikd); "
        "student trains the student alone, without a teacher; "
        f"{' and '.join(TWO_VIEW_METHODS)} train on two views of each image",
    )
    parser.add_argument(
        "--logit-standardization", action="store_true",
        help="z-score the logits before every softmax KD (Sun et al., CVPR 2024), "
        "with the reference's CIFAR-100 temperature 2 and logits weight 9: the "
        f"method's '+ls' variant ({', '.join(ls_methods())})",
    )


def _add_cache_arguments(parser):
    _add_data_arguments(parser)
    _add_method_arguments(parser)
    parser.add_argument("--teacher", required=True, help="trained teacher .keras file")
    parser.add_argument("--cache-dir", required=True, help="the cache's directory")
    parser.add_argument(
        "--epochs", type=int, help="number of epochs to cache (default: the recipe's)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default=DTYPES[0],
        help="storage of the teacher's outputs (float16: half the size)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="the teacher's batch size (default: the recipe's; "
        "the cached views do not depend on it)"
    )
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed of the keyed data order and augmentation (default: 0); train "
        "from the cache with the same seed",
    )
    parser.add_argument(
        "--verbose", type=int, choices=(0, 1, 2),
        help="0: silent; 1: a progress bar per epoch (default on a terminal); 2: a "
        "line per epoch",
    )


def build_parser():
    """The argument parser of `keras-unikd`.

    Returns:
        An `argparse.ArgumentParser` with the sub-commands `list-presets`,
        `train-teacher`, `distill` and `cache-teacher`.
    """
    parser = argparse.ArgumentParser(
        prog="keras-unikd",
        description="Reproduce the UniKD (ECCV 2024) experiments with Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list-presets", help="list the experiments")
    listing.add_argument("--json", action="store_true", help="print every field as JSON")
    teacher = commands.add_parser(
        "train-teacher", help="train a preset's teacher from scratch with its recipe"
    )
    _add_run_arguments(teacher)
    distill = commands.add_parser(
        "distill", help="train a preset's student with a distillation method"
    )
    _add_run_arguments(distill)
    _add_method_arguments(distill)
    distill.add_argument(
        "--teacher",
        help="trained teacher .keras file (default: "
        f"<output-dir>/{TEACHER_DIR}/best_teacher.keras from train-teacher)",
    )
    distill.add_argument(
        "--teacher-cache",
        metavar="DIR",
        help="train from the teacher-output cache that `cache-teacher` wrote for this "
        "preset, method, --seed (default 0) and --take: the teacher's forward pass is "
        "read, not run (CIFAR-100 presets)",
    )
    cache = commands.add_parser(
        "cache-teacher",
        help="write the teacher's outputs on every keyed training view to disk "
        "(a teacher-output cache)",
    )
    _add_cache_arguments(cache)
    return parser


def ls_methods():
    """The methods that have a logit-standardization variant, `<method>+ls`."""
    return [m for m in METHODS if f"{m}+ls" in VARIANTS]


def run_method(preset, method=None, logit_standardization=False):
    """The name of the distillation run: a method, or its `+ls` variant.

    Args:
        preset: A `Preset`.
        method: A key of `METHODS`, or `None` for the preset's own method
            (`preset.method`), else `"unikd"`.
        logit_standardization: Whether to run the method's `+ls` variant.

    Returns:
        `(name, views)`: e.g. `("mlkd+ls", 2)`; `views` is 2 for the
        two-view methods (`TWO_VIEW_METHODS`), else 1.

    Raises:
        CLIError: for `logit_standardization` with a method without a `+ls`
            variant, or a two-view method on a dataset whose pipeline has
            one view (ImageNet).
    """
    method = method or preset.method or "unikd"
    name = method
    if logit_standardization:
        name = f"{method}+ls"
        if name not in VARIANTS:
            raise CLIError(
                f"--logit-standardization standardizes the logits of a KL-based "
                f"distillation loss, which --method {method} does not have. Use it "
                f"with --method {' | '.join(ls_methods())}, or drop the flag."
            )
    views = 2 if method in TWO_VIEW_METHODS else 1
    if views == 2 and preset.dataset != "cifar100":
        raise CLIError(
            f"--method {method} trains on two views of each image (weak and "
            f"strong augmentation), but the {preset.dataset} pipeline has one "
            "view. Use a CIFAR-100 preset, or a one-view method: "
            f"{', '.join(m for m in METHODS if m not in TWO_VIEW_METHODS)}."
        )
    return name, views


# ----------------------------------------------------------------------
# Backend selection (before Keras is imported)
# ----------------------------------------------------------------------


def _loaded_backend():
    if "keras" not in sys.modules:
        return None
    return sys.modules["keras"].backend.backend()


def _relaunch(argv, backend):
    """Runs the same command in a fresh interpreter under `backend`."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    print(
        f"keras-unikd: Keras is already loaded with the {_loaded_backend()!r} "
        f"backend; re-running under KERAS_BACKEND={backend}.",
        file=sys.stderr,
        flush=True,
    )
    return subprocess.call([sys.executable, "-m", "keras_unikd", *argv], env=env)


# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------


def _run_dir(args, preset, role):
    root = args.output_dir or os.path.join(DEFAULT_OUTPUT_ROOT, preset.name)
    return os.path.join(root, role)


def default_teacher_path(output_dir):
    """Where `train-teacher` writes the teacher under `output_dir`."""
    return os.path.join(output_dir, TEACHER_DIR, "best_teacher.keras")


def _command_line(args, preset):
    parts = ["keras-unikd", "train-teacher", "--preset", preset.name]
    for flag in ("output_dir", "data_dir", "backend", "take"):
        value = getattr(args, flag, None)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    return " ".join(parts)


def _get_preset(name):
    from keras_unikd import presets

    try:
        return presets.get_preset(name)
    except ValueError as error:
        raise CLIError(str(error)) from None


def _check_teacher_file(path, args, preset):
    if not os.path.exists(path):
        raise CLIError(
            f"Teacher file {path!r} does not exist. Train the "
            f"teacher first:\n  {_command_line(args, preset)}\nor pass a "
            "trained teacher with --teacher PATH."
        )


def _load_teacher(path):
    import keras

    return keras.models.load_model(path, compile=False)


def _verbosity(args):
    return args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)


def _strategy(args, keras):
    if args.strategy == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise CLIError(
            "--strategy mirrored uses tf.distribute.MirroredStrategy, which "
            "needs the TensorFlow backend; the active backend is "
            f"{keras.backend.backend()!r}. Add --backend tensorflow, or drop "
            "--strategy."
        )
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


def load_datasets(preset, batch_size, data_dir=None, take=None, seed=None, views=1):
    """The preset's `(train_ds, val_ds)` pipelines (tf.data, via TFDS).

    Args:
        preset: A `Preset`.
        batch_size: Training (and evaluation) batch size.
        data_dir: TFDS data directory.
        take: Optional number of examples of each split.
        seed: Optional shuffle/augmentation seed.
        views: 2 for `((weak, strong), labels)` training batches (CIFAR-100
            only); the validation pipeline is single view either way.

    Returns:
        `(train_ds, val_ds)`.

    Raises:
        CLIError: for two views of a dataset other than CIFAR-100.
    """
    if preset.dataset == "cifar100":
        from keras_unikd.data.cifar100 import cifar100_datasets

        return cifar100_datasets(
            batch_size=batch_size,
            data_dir=data_dir,
            shuffle_seed=seed,
            take=take,
            two_views=views == 2,
        )
    if views != 1:
        raise CLIError(
            f"The {preset.dataset} pipeline has one view per image; two views "
            "(--method mlkd or unimlkd) need a CIFAR-100 preset."
        )
    from keras_unikd.data.imagenet import imagenet_datasets

    return imagenet_datasets(
        batch_size=batch_size,
        data_dir=data_dir,
        image_size=preset.image_size,
        take=take,
        shuffle_seed=seed,
    )


def _steps_per_epoch(dataset, preset, batch_size, take):
    cardinality = int(dataset.cardinality())
    if cardinality > 0:
        return cardinality
    examples = take or KNOWN_TRAIN_SIZES[preset.dataset]
    return math.ceil(examples / batch_size)


def _tensorboard_available():
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _read_log(path):
    import csv

    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _summarise(log_rows, best, run_info, published):
    """The content of `results.json`.

    The best top-1 and its epoch are those of the saved best network
    (`best`: its checkpoint's record, `{"best": val_accuracy, "epoch": ...}`,
    or `None` when none was saved); the other figures come from the log.
    """

    def top1(accuracy):
        return round(100.0 * float(accuracy), 4)

    rows = [row for row in log_rows if row.get("val_accuracy") not in (None, "")]
    seconds = [float(row["epoch_seconds"]) for row in log_rows if row.get("epoch_seconds")]
    steady = seconds[1:] or seconds
    return {
        **run_info,
        "epochs_completed": len(log_rows),
        "best_top1": top1(best["best"]) if best else None,
        "best_epoch": best["epoch"] if best else None,
        "last_top1": top1(rows[-1]["val_accuracy"]) if rows else None,
        "seconds_per_epoch": sum(steady) / len(steady) if steady else None,
        "first_epoch_seconds": seconds[0] if seconds else None,
        "published_top1": published,
    }


# ----------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------


def _list_presets(args):
    from keras_unikd import presets

    if args.json:
        records = [presets.get_preset(n).to_dict() for n in presets.list_presets()]
        print(json.dumps(records, indent=2))
        return 0
    header = (
        f"{'preset':41s} {'teacher':>19s} -> {'student':19s} "
        f"{'method':>7s} {'views':>5s} {'epochs':>6s} {'lr':>6s} {'beta':>4s}"
    )
    print(header)
    print("-" * len(header))
    for name in presets.list_presets():
        p = presets.get_preset(name)
        print(
            f"{p.name:41s} {p.teacher:>19s} -> {p.student:19s} {p.method or 'any':>7s} "
            f"{2 if p.two_views else 1:5d} {p.recipe.epochs:6d} "
            f"{p.recipe.learning_rate:6g} {p.dkd_beta:4g}"
        )
    return 0


def _train(args, role):
    """Shared body of `train-teacher` (role "teacher") and `distill`."""
    import keras

    from keras_unikd import presets
    from keras_unikd.callbacks import EpochTimer
    from keras_unikd.callbacks import StudentCheckpoint
    from keras_unikd.data.keyed import keyed_steps_per_epoch
    from keras_unikd.keras_internals import backup_start_epoch

    preset = _get_preset(args.preset)
    if role == "teacher":
        method, views = "teacher", 1
    else:
        method, views = run_method(preset, args.method, args.logit_standardization)
    recipe = preset.teacher_recipe if role == "teacher" else preset.recipe
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    run_dir = _run_dir(args, preset, TEACHER_DIR if role == "teacher" else method)
    output_root = os.path.dirname(run_dir)

    teacher_path = None
    if role == "student" and method != "student":
        teacher_path = args.teacher or default_teacher_path(output_root)
        _check_teacher_file(teacher_path, args, preset)
    strategy = _strategy(args, keras)
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    os.makedirs(run_dir, exist_ok=True)

    cache_dir = getattr(args, "teacher_cache", None)
    train_ds, val_ds = load_datasets(
        preset, batch_size, data_dir=args.data_dir, take=args.take, seed=args.seed, views=views
    )
    steps = _steps_per_epoch(train_ds, preset, batch_size, args.take)
    backup_dir = os.path.join(run_dir, "backup")
    if cache_dir:
        images, labels = _cache_run_arrays(args, preset, method, strategy)
        steps = keyed_steps_per_epoch(len(images), batch_size)

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        if role == "teacher":
            model = presets.build_model(preset, "teacher")
            network = model
        else:
            student = presets.build_model(preset, "student")
            teacher = _load_teacher(teacher_path) if teacher_path else None
            model = presets.build_distiller(preset, teacher, student, method, seed=args.seed)
            network = getattr(model, "student", model)
        optimizer = presets.build_optimizer(
            preset, steps, role="teacher" if role == "teacher" else "student", epochs=epochs
        )
        presets.compile_for_training(preset, model, optimizer)
    if cache_dir:
        start_epoch = backup_start_epoch(backup_dir)
        train_ds = _cached_batches(
            args, model, images, labels, epochs, batch_size, views, start_epoch
        )

    name = "teacher" if role == "teacher" else "student"
    last_path = os.path.join(run_dir, f"last_{name}.keras")
    log_path = os.path.join(run_dir, "log.csv")
    best = StudentCheckpoint(os.path.join(run_dir, f"best_{name}.keras"))
    callbacks = [
        EpochTimer(),  # First: later callbacks see `epoch_seconds`.
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        best,
        keras.callbacks.CSVLogger(log_path, append=True),
    ]
    if cache_dir:
        callbacks.append(_keyed_start_check(start_epoch))
    if _tensorboard_available():
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), profile_batch=0)
        )
    else:
        print(
            "keras-unikd: warning: TensorBoard is not installed, so no TensorBoard "
            "logs are written (pip install tensorboard).",
            file=sys.stderr,
        )
    verbose = _verbosity(args)
    print(
        f"keras-unikd: {method} on {preset.name}: {epochs} epochs x {steps} steps "
        f"(batch {batch_size}, {views} view{'s' if views > 1 else ''}), "
        f"backend {keras.backend.backend()}, "
        f"{strategy.num_replicas_in_sync if strategy else 1} replica(s); "
        f"writing {run_dir}",
        flush=True,
    )
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        steps_per_epoch=steps if cache_dir else None,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # The tf.data pipeline shuffles.
    )
    network.save(last_path)

    published = preset.published
    results = _summarise(
        _read_log(log_path),
        _read_json(best.state_path),
        {
            "preset": preset.name,
            "method": method,
            "views": views,
            "logit_standardization": method.endswith("+ls"),
            "dataset": preset.dataset,
            "teacher_model": preset.teacher,
            "student_model": preset.student,
            "epochs": epochs,
            "batch_size": batch_size,
            "steps_per_epoch": steps,
            "take": args.take,
            "seed": args.seed,
            "backend": keras.backend.backend(),
            "strategy": args.strategy,
            "replicas": strategy.num_replicas_in_sync if strategy else 1,
            "teacher_path": teacher_path,
            "teacher_cache": os.path.abspath(cache_dir) if cache_dir else None,
            "best_model": best.filepath,
            "last_model": last_path,
            "log": log_path,
        },
        published.teacher if role == "teacher" else published.of(method),
    )
    results["preset_config"] = preset.to_dict()
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(
        f"keras-unikd: best top-1 {results['best_top1']}% (epoch "
        f"{results['best_epoch']}), last {results['last_top1']}%, "
        f"{results['seconds_per_epoch'] or 0:.1f} s/epoch; published "
        f"{results['published_top1'] or 'n/a'}. Results: {os.path.join(run_dir, 'results.json')}",
        flush=True,
    )
    return 0


def _cache_run_arrays(args, preset, method, strategy):
    """The training arrays of `distill --teacher-cache`, after its checks."""
    from keras_unikd.data.cifar100 import cifar100_train_arrays

    if preset.dataset != "cifar100":
        raise CLIError(
            f"--teacher-cache trains on the keyed CIFAR-100 pipeline; the {preset.dataset} "
            "pipeline is not keyed, so its teacher runs online. Drop --teacher-cache."
        )
    if method == "student":
        raise CLIError(
            "--method student trains the student alone and reads no teacher: drop "
            "--teacher-cache."
        )
    if strategy is not None:
        raise CLIError(
            "--teacher-cache runs on one device for now: drop --strategy (or "
            "--teacher-cache, to distil online on several devices)."
        )
    return cifar100_train_arrays(data_dir=args.data_dir, take=args.take)


def _cached_batches(args, model, images, labels, epochs, batch_size, views, start_epoch):
    """The keyed training batches of `distill --teacher-cache`, with the
    teacher's outputs read from the cache (checked against this run first)."""
    from keras_unikd.data.keyed import CIFAR100_KEYED_OPTIONS
    from keras_unikd.teacher_cache import cached_teacher_pipeline
    from keras_unikd.teacher_cache import open_teacher_cache

    seed = 0 if args.seed is None else args.seed
    try:
        cache = open_teacher_cache(
            args.teacher_cache, model.teacher, model.teacher_needs, images, labels,
            seed=seed, epochs=epochs, two_views=views == 2, **CIFAR100_KEYED_OPTIONS,
        )
    except ValueError as error:
        raise CLIError(f"--teacher-cache: {error}") from None
    print(
        f"keras-unikd: the teacher's outputs come from the cache at "
        f"{os.path.abspath(args.teacher_cache)} (keyed seed {seed}"
        + (f", resuming at epoch {start_epoch}" if start_epoch else "")
        + ")",
        flush=True,
    )
    return cached_teacher_pipeline(cache, images, labels, batch_size, start_epoch=start_epoch)


def _keyed_start_check(start_epoch):
    """A callback that stops `fit` if it does not start at `start_epoch`, the
    first epoch of the keyed batches (every later epoch then matches)."""
    import keras

    started = []

    def check(epoch, logs=None):
        if not started and epoch != start_epoch:
            raise RuntimeError(
                f"keras-unikd: fit resumed at epoch {epoch}, but the cached batches start "
                f"at epoch {start_epoch}: the backup changed after it was read (Keras "
                "fell back to its previous backup). Run the command again."
            )
        started.append(epoch)

    return keras.callbacks.LambdaCallback(on_epoch_begin=check)


def _cache_teacher(args):
    """`cache-teacher`: builds the teacher-output cache of a preset's distiller."""
    import time

    from keras_unikd import presets
    from keras_unikd.data.cifar100 import cifar100_train_arrays
    from keras_unikd.data.keyed import CIFAR100_KEYED_OPTIONS
    from keras_unikd.teacher_cache import build_teacher_cache

    preset = _get_preset(args.preset)
    method, views = run_method(preset, args.method, args.logit_standardization)
    if preset.dataset != "cifar100":
        raise CLIError(
            f"cache-teacher caches the views of the keyed CIFAR-100 pipeline; the "
            f"{preset.dataset} pipeline is not keyed, so its teacher runs online. "
            "Use a CIFAR-100 preset, or distill without a cache."
        )
    _check_teacher_file(args.teacher, args, preset)
    teacher = _load_teacher(args.teacher)
    distiller = presets.build_distiller(
        preset, teacher, presets.build_model(preset, "student"), method, seed=args.seed
    )
    needs = getattr(distiller, "teacher_needs", None)
    if needs is None:
        raise CLIError(
            f"--method {method} trains the student alone and reads nothing of the "
            "teacher, so there is nothing to cache. Pick a distillation method."
        )
    if not needs.cacheable:
        raise CLIError(
            f"--method {method} cannot be trained from a teacher cache: {needs.reason}. "
            "Distill it online (keras-unikd distill), or cache another method."
        )
    epochs = args.epochs or preset.recipe.epochs
    images, labels = cifar100_train_arrays(data_dir=args.data_dir, take=args.take)
    print(
        f"keras-unikd: caching the teacher of {method} on {preset.name}: {epochs} "
        f"epoch(s) x {len(images)} examples x {views} view(s), {args.dtype}, "
        f"seed {args.seed}; writing {args.cache_dir}",
        flush=True,
    )
    start = time.perf_counter()
    try:
        cache = build_teacher_cache(
            args.cache_dir,
            teacher,
            needs,
            images,
            labels,
            seed=args.seed,
            epochs=epochs,
            batch_size=args.batch_size or preset.recipe.batch_size,
            dtype=args.dtype,
            two_views=views == 2,
            verbose=_verbosity(args),
            **CIFAR100_KEYED_OPTIONS,
        )
    except ValueError as error:
        raise CLIError(str(error)) from None
    seconds = time.perf_counter() - start
    size = cache.disk_bytes()
    print(
        f"keras-unikd: teacher cache at {os.path.abspath(args.cache_dir)}: "
        f"{size / 2**20:.1f} MiB on disk, built in {seconds:.1f} s",
        flush=True,
    )
    return 0


def main(argv=None):
    """Runs `keras-unikd` with `argv` (default: `sys.argv[1:]`).

    Args:
        argv: The command-line arguments, without the program name.

    Returns:
        The exit status: 0 on success, 2 for user errors (unknown preset,
        missing teacher, unsupported strategy), which are printed to
        stderr as `error: ...`.

    Example:

    ```python
    from keras_unikd import cli

    cli.main(["distill", "--preset", "cifar100_resnet32x4_resnet8x4",
              "--method", "dkd", "--epochs", "1", "--take", "256"])
    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    backend = getattr(args, "backend", None)
    if backend is not None:
        loaded = _loaded_backend()
        if loaded is None:
            os.environ["KERAS_BACKEND"] = backend
        elif loaded != backend:
            return _relaunch(argv, backend)
    try:
        if args.command == "list-presets":
            return _list_presets(args)
        if args.command == "cache-teacher":
            return _cache_teacher(args)
        return _train(args, "teacher" if args.command == "train-teacher" else "student")
    except CLIError as error:
        print(f"keras-unikd: error: {error}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
