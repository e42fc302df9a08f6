"""The Fashion-MNIST distillation experiment shared by the demo and the benchmarks.

A ~290k-parameter teacher learns from all 60k training images (trained once,
cached on disk with its accuracy); a ~6k-parameter student learns from a
class-balanced subset with the same optimizer, schedule and augmentation for
every method, so that only the distillation method differs.
"""

import dataclasses
import json
import os

import keras
import numpy as np

from keras_unikd.callbacks import EpochTimer
from keras_unikd.data import channel_stats
from keras_unikd.data import make_image_pipeline
from keras_unikd.data import take_subset
from keras_unikd.distiller import Distiller
from keras_unikd.fitnet import FitNetDistiller
from keras_unikd.models import fashion_student
from keras_unikd.models import fashion_teacher
from keras_unikd.presets import VARIANTS
from keras_unikd.presets import variant_kwargs

_UNIKD_TAPS = dict(
    teacher_features=["stage1_preact"],
    student_features=["stage1", "stage2", "stage3", "pool"],
)
_DKD = dict(logits_loss="dkd", dkd_beta=8.0)

# This experiment's settings of each method of `keras_unikd.presets.METHODS`:
# (distiller class, its arguments), or `None` to train the student alone.
# The logits-loss warm-up is scaled to the short schedule (2 epochs instead
# of the paper's 20 of 240). The order is the benchmarks' table order.
_SETTINGS = {
    "student": None,
    "kd": (Distiller, dict(logits_loss="kd", distribution_loss=None, warmup_epochs=0)),
    "dkd": (Distiller, dict(distribution_loss=None, warmup_epochs=2, **_DKD)),
    "fitnet": (
        FitNetDistiller,
        dict(teacher_feature="stage2", student_feature="stage2", warmup_epochs=0),
    ),
    "unikd": (
        Distiller,
        dict(distribution_loss="sampled", warmup_epochs=2, **_DKD, **_UNIKD_TAPS),
    ),
}


def _with_variants(settings):
    """Each method's settings followed by those of its `VARIANTS`."""
    table = {}
    for method, setting in settings.items():
        table[method] = setting
        for variant, (base, _) in VARIANTS.items():
            if base == method:
                distiller_class, options = setting
                table[variant] = (distiller_class, variant_kwargs(variant, options))
    return table


# Method name -> (distiller class, its arguments), or `None`: the paper's
# methods and the benchmarks' variants of them (the FitNet + KD foil and
# UniKD's ablations, `keras_unikd.presets.VARIANTS`).
METHODS = _with_variants(_SETTINGS)


@dataclasses.dataclass
class Recipe:
    """Settings of one run; the defaults are the demo's."""

    teacher_epochs: int = 2
    student_epochs: int = 8
    subset: int = 10_000
    batch_size: int = 128
    learning_rate: float = 0.05
    student_width: int = 8
    # XLA is slower than plain TensorFlow for these small convnets on CPU, and
    # Keras's torch jit (torch.compile) is experimental: only JAX compiles.
    jit_compile: bool = keras.backend.backend() == "jax"


def make_pipelines(dataset, recipe, seed):
    """`(teacher_train, student_train, test)` tf.data pipelines."""
    mean, std = channel_stats(dataset.x_train)
    padding = max(1, dataset.image_shape[0] // 14)  # 2 pixels at 28x28
    common = dict(batch_size=recipe.batch_size, mean=mean, std=std)
    augmented = dict(training=True, augment=True, crop_padding=padding, shuffle_seed=seed)
    teacher_train = make_image_pipeline(
        dataset.x_train, dataset.y_train, **augmented, **common
    )
    x_subset, y_subset = take_subset(
        dataset.x_train, dataset.y_train, min(recipe.subset, len(dataset.x_train)), seed=seed
    )
    student_train = make_image_pipeline(x_subset, y_subset, **augmented, **common)
    test = make_image_pipeline(dataset.x_test, dataset.y_test, training=False, **common)
    return teacher_train, student_train, test


def make_optimizer(recipe, steps_per_epoch, epochs):
    """SGD, momentum 0.9, cosine-decayed learning rate: the same for every run."""
    schedule = keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate, decay_steps=steps_per_epoch * epochs
    )
    return keras.optimizers.SGD(schedule, momentum=0.9)


def summarize(history):
    """Best and last test accuracy and the median epoch time of a `History`.

    The first epoch includes tracing and compilation, so the median is taken
    over the others when there are any.
    """
    accuracy = history.history["val_accuracy"]
    seconds = history.history["epoch_seconds"]
    return {
        "best_accuracy": float(max(accuracy)),
        "last_accuracy": float(accuracy[-1]),
        "seconds_per_epoch": float(np.median(seconds[1:] or seconds)),
    }


def fit(model, train, test, epochs, verbose=2):
    """Fits with an `EpochTimer`; returns the `History`."""
    return model.fit(
        train,
        validation_data=test,
        epochs=epochs,
        callbacks=[EpochTimer()],
        verbose=verbose,
    )


def teacher_or_cached(dataset, teacher_train, test, recipe, cache_dir, seed=0, retrain=False):
    """Trains the teacher, or loads it from `cache_dir` when trained before.

    Returns:
        `(teacher, record)` where `record` holds the teacher's test accuracy
        and the `path` of its `.keras` file.
    """
    stem = os.path.join(cache_dir, f"teacher_{dataset.name}_{recipe.teacher_epochs}ep_seed{seed}")
    model_path, record_path = stem + ".keras", stem + ".json"
    if os.path.exists(model_path) and os.path.exists(record_path) and not retrain:
        print(f"Using the cached teacher {model_path}")
        with open(record_path) as handle:
            record = json.load(handle)
        return keras.models.load_model(model_path), dict(record, path=model_path)
    keras.utils.set_random_seed(seed)
    teacher = fashion_teacher(dataset.image_shape, dataset.num_classes)
    teacher.compile(
        optimizer=make_optimizer(recipe, len(teacher_train), recipe.teacher_epochs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=recipe.jit_compile,
    )
    print(f"Training the teacher ({teacher.count_params():,} parameters)")
    record = summarize(fit(teacher, teacher_train, test, recipe.teacher_epochs))
    os.makedirs(cache_dir, exist_ok=True)
    teacher.save(model_path)
    with open(record_path, "w") as handle:
        json.dump(record, handle, indent=2)
    return teacher, dict(record, path=model_path)


def build_student_model(method, teacher, dataset, recipe, steps_per_epoch, seed):
    """A compiled model for `method`: the student itself or a distiller.

    Returns:
        `(model, student)`.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; known methods: {list(METHODS)}.")
    keras.utils.set_random_seed(seed)
    student = fashion_student(
        dataset.image_shape, dataset.num_classes, width=recipe.student_width
    )
    optimizer = make_optimizer(recipe, steps_per_epoch, recipe.student_epochs)
    if METHODS[method] is None:
        student.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=recipe.jit_compile,
        )
        return student, student
    distiller_class, options = METHODS[method]
    options = dict(options)
    if distiller_class is Distiller and options.get("distribution_loss"):
        options["seed"] = seed
    model = distiller_class(teacher, student, **options)
    model.compile(optimizer=optimizer, metrics=["accuracy"], jit_compile=recipe.jit_compile)
    return model, student
