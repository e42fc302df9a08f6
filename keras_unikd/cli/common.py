"""What the commands share: errors, arguments, presets, methods, teacher and data.

Nothing here imports Keras at import time: `keras-unikd --help` and
`list-presets` run without it.
"""

import math
import os
import sys

from keras_unikd.methods import METHODS
from keras_unikd.methods import TWO_VIEW_METHODS
from keras_unikd.methods import VARIANTS
from keras_unikd.methods import method_views

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


def add_preset_arguments(parser):
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


def add_run_arguments(parser):
    """The options of the commands that train: `train-teacher` and `distill`."""
    add_preset_arguments(parser)
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
    add_verbose_argument(
        parser, "Keras verbosity (default: 1, the progress bar, on a terminal; 2 otherwise)"
    )


def add_verbose_argument(parser, help):
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), help=help)


def add_method_arguments(parser):
    """`--method` (the method table's) and `--logit-standardization`."""
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


# ----------------------------------------------------------------------
# Presets and methods
# ----------------------------------------------------------------------


def get_preset(name):
    """The preset called `name`, or a `CLIError` that lists the presets."""
    from keras_unikd import presets

    try:
        return presets.get_preset(name)
    except ValueError as error:
        raise CLIError(str(error)) from None


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
    views = method_views(method)
    if views == 2 and preset.dataset != "cifar100":
        raise CLIError(
            f"--method {method} trains on two views of each image (weak and "
            f"strong augmentation), but the {preset.dataset} pipeline has one "
            "view. Use a CIFAR-100 preset, or a one-view method: "
            f"{', '.join(m for m in METHODS if m not in TWO_VIEW_METHODS)}."
        )
    return name, views


def reads_a_teacher(method):
    """Whether a run of `method` (or variant) reads the teacher."""
    from keras_unikd.methods import method_base

    return METHODS[method_base(method)].teacher


# ----------------------------------------------------------------------
# Run folders, the teacher, the strategy
# ----------------------------------------------------------------------


def run_dir(args, preset, name):
    """`<output-dir>/<name>`, the output dir defaulting to `runs/<preset>`."""
    root = args.output_dir or os.path.join(DEFAULT_OUTPUT_ROOT, preset.name)
    return os.path.join(root, name)


def default_teacher_path(output_dir):
    """Where `train-teacher` writes the teacher under `output_dir`."""
    return os.path.join(output_dir, TEACHER_DIR, "best_teacher.keras")


def train_teacher_command(args, preset):
    """The `keras-unikd train-teacher` command line of this run's teacher."""
    parts = ["keras-unikd", "train-teacher", "--preset", preset.name]
    for flag in ("output_dir", "data_dir", "backend", "take"):
        value = getattr(args, flag, None)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    return " ".join(parts)


def check_teacher_file(path, args, preset):
    """A `CLIError` that says how to train the teacher when `path` does not exist.

    An existing `.keras` file that is not a readable archive (truncated,
    corrupt) is a `CLIError` too, from `distiller_checks.check_model_archive`.
    """
    from keras_unikd.distiller_checks import check_model_archive

    if not os.path.exists(path):
        raise CLIError(
            f"Teacher file {path!r} does not exist. Train the "
            f"teacher first:\n  {train_teacher_command(args, preset)}\nor pass a "
            "trained teacher with --teacher PATH."
        )
    try:
        check_model_archive(path, "teacher")
    except ValueError as error:
        command = train_teacher_command(args, preset)
        raise CLIError(f"{error} To train it again:\n  {command}") from None


def load_teacher(path):
    """The teacher saved at `path` (not compiled); a damaged file is a `CLIError`."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CLIError(
            f"The teacher file {path!r} cannot be loaded ({first}). Check that it is a "
            "model saved with model.save(...) as .keras, or train it again."
        ) from None


def verbosity(args):
    """`--verbose`, by default 1 (a progress bar) on a terminal and 2 otherwise."""
    return args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)


def strategy(args):
    """The `tf.distribute` strategy of `--strategy`, or `None`."""
    import keras

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


# ----------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------


def load_datasets(
    preset, batch_size, data_dir=None, take=None, seed=None, views=1, with_example_index=False
):
    """The preset's `(train_ds, val_ds)` pipelines (tf.data, via TFDS).

    Args:
        preset: A `Preset`.
        batch_size: Training (and evaluation) batch size.
        data_dir: TFDS data directory.
        take: Optional number of examples of each split.
        seed: Optional shuffle/augmentation seed.
        views: 2 for `((weak, strong), labels)` training batches (CIFAR-100
            only); the validation pipeline is single view either way.
        with_example_index: Whether the training batches carry each
            example's index (CRD; CIFAR-100 only).

    Returns:
        `(train_ds, val_ds)`.

    Raises:
        CLIError: for two views of a dataset other than CIFAR-100.
    """
    if preset.dataset == "cifar100":
        from keras_unikd.data import cifar100

        return cifar100.cifar100_datasets(
            batch_size=batch_size,
            data_dir=data_dir,
            shuffle_seed=seed,
            take=take,
            two_views=views == 2,
            with_example_index=with_example_index,
        )
    if with_example_index:
        raise CLIError(
            f"The {preset.dataset} pipeline does not carry example indices, which the "
            "method's memory banks (CRD) read. Use a CIFAR-100 preset."
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


def train_labels(args, preset, method):
    """The training set's labels for a method that reads them (CRD), else `None`."""
    from keras_unikd.methods import reads_train_labels

    if not reads_train_labels(method) or preset.dataset != "cifar100":
        return None  # load_datasets names the missing indices for other datasets
    from keras_unikd.data.cifar100 import cifar100_train_arrays

    return cifar100_train_arrays(data_dir=args.data_dir, take=args.take)[1]


def steps_per_epoch(dataset, preset, batch_size, take):
    """The batches of an epoch of `dataset` (its cardinality, else from the data size)."""
    cardinality = int(dataset.cardinality())
    if cardinality > 0:
        return cardinality
    examples = take or KNOWN_TRAIN_SIZES[preset.dataset]
    return math.ceil(examples / batch_size)
