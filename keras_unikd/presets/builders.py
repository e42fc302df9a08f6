"""Keras objects from a preset: models, optimizer, the model to fit.

- `build_models(preset)`: the (untrained) teacher and student;
- `build_optimizer(preset, steps_per_epoch)`: PyTorch-form SGD with the step schedule;
- `build_terms(preset, method)`: the method's terms with the preset's settings;
- `build_distiller(preset, teacher, student, method)`: the model to fit;
- `compile_for_training(preset, model, optimizer)`: compiles it;
"""

import types

import keras

from keras_unikd.methods import METHODS
from keras_unikd.methods import method_base
from keras_unikd.methods import method_terms
from keras_unikd.methods import reads_train_labels
from keras_unikd.methods import with_seed
from keras_unikd.optimizers import TorchSGD
from keras_unikd.presets.recipes import IMAGENET
from keras_unikd.presets.recipes import get_preset
from keras_unikd.presets.recipes import layer_names
from keras_unikd.terms.base import AUTO_FEATURES

# The settings that name layers, and whose: a method's defaults name the zoo's
# canonical taps (`stage1`, ...), which each preset maps to its models' layers.
TAP_SETTINGS = {
    "teacher_features": "teacher",
    "student_features": "student",
    "teacher_feature": "teacher",
    "student_feature": "student",
}

# ----------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------


def _zoo(name):
    def build(num_classes, input_shape):
        from keras_unikd.models import get_model

        return get_model(name, num_classes=num_classes, input_shape=input_shape)

    return build


def _imagenet_resnet(depth):
    def build(num_classes, input_shape):
        from keras_unikd.models import imagenet_resnet

        builder = getattr(imagenet_resnet, f"imagenet_resnet{depth}")
        return builder(num_classes=num_classes, input_shape=input_shape)

    return build


def _application(application, name):
    """A keras.applications backbone with a `pool` -> `logits` head."""

    def build(num_classes, input_shape):
        inputs = keras.Input(input_shape, name="input")
        backbone = getattr(keras.applications, application)(
            include_top=False, weights=None, input_tensor=inputs
        )
        x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
        logits = keras.layers.Dense(num_classes, name="logits")(x)
        return keras.Model(inputs, logits, name=name)

    return build


# Model name -> builder(num_classes, input_shape). CIFAR names are the zoo's.
MODEL_BUILDERS = types.MappingProxyType(
    {
        **{
            name: _zoo(name)
            for name in (
                "resnet8x4",
                "resnet20",
                "resnet32",
                "resnet32x4",
                "resnet50",
                "resnet56",
                "resnet110",
                "wrn_16_2",
                "wrn_40_1",
                "wrn_40_2",
                "vgg8",
                "vgg13",
                "mobilenetv2",
                "shufflenetv1",
                "shufflenetv2",
            )
        },
        "resnet18_imagenet": _imagenet_resnet(18),
        "resnet34_imagenet": _imagenet_resnet(34),
        "resnet50_imagenet": _application("ResNet50", "resnet50_imagenet"),
        "mobilenet_imagenet": _application("MobileNet", "mobilenet_imagenet"),
    }
)


# ----------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------


def build_model(preset, role, image_size=None):
    """Builds the preset's teacher or student, untrained.

    Args:
        preset: A `Preset` or preset name.
        role: `"teacher"` or `"student"`.
        image_size: Optional input size overriding `preset.image_size` (the
            ImageNet models accept any size divisible by 32; the CIFAR zoo is
            built for 32).

    Returns:
        A functional `keras.Model` mapping images to logits.

    Raises:
        ValueError: for an unknown role.
    """
    preset = get_preset(preset)
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student'; got {role!r}.")
    size = image_size or preset.image_size
    builder = MODEL_BUILDERS[getattr(preset, role)]
    return builder(preset.num_classes, (size, size, 3))


def build_models(preset, image_size=None):
    """Builds the preset's teacher and student (both untrained).

    Args:
        preset: A `Preset` or preset name.
        image_size: Optional input size overriding `preset.image_size`.

    Returns:
        `(teacher, student)`, functional `keras.Model`s with logits outputs.
    """
    return (
        build_model(preset, "teacher", image_size),
        build_model(preset, "student", image_size),
    )


def _recipe(preset, role):
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student'; got {role!r}.")
    return preset.teacher_recipe if role == "teacher" else preset.recipe


def learning_rate_schedule(preset, steps_per_epoch, role="student", epochs=None):
    """The recipe's step schedule as a `PiecewiseConstantDecay` (in steps).

    Args:
        preset: A `Preset` or preset name.
        steps_per_epoch: Optimizer steps per epoch.
        role: `"student"` (the distillation recipe) or `"teacher"`.
        epochs: Optional shorter or longer run; the decay epochs are scaled
            by `epochs / recipe.epochs` (e.g. 150/180/210 of 240 become
            75/90/105 of 120). `None` keeps the recipe.

    Returns:
        A `keras.optimizers.schedules.PiecewiseConstantDecay`.
    """
    preset = get_preset(preset)
    recipe = _recipe(preset, role)
    scale = 1.0 if epochs is None else epochs / recipe.epochs
    # mdistiller decays after epoch e (1-based): the first step of epoch e + 1,
    # optimizer iteration e * steps_per_epoch (0-based), already uses the new
    # rate; PiecewiseConstantDecay keeps values[0] while step <= boundary.
    boundaries = [
        max(1, round(epoch * scale)) * int(steps_per_epoch) - 1
        for epoch in recipe.lr_decay_epochs
    ]
    values = [
        recipe.learning_rate * recipe.lr_decay_rate**k
        for k in range(len(boundaries) + 1)
    ]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_optimizer(preset, steps_per_epoch, role="student", epochs=None):
    """The recipe's optimizer: SGD, momentum, coupled L2, step schedule.

    The optimizer is `keras_unikd.TorchSGD`, PyTorch's form of momentum SGD
    (`buf = momentum * buf + grad + wd * w; w -= lr * buf`), as the reference
    recipes were trained: each learning-rate drop of the schedule acts at
    once, where `keras.optimizers.SGD` would carry the old rate in its
    velocity for about 10 steps.

    Args:
        preset: A `Preset` or preset name.
        steps_per_epoch: Optimizer steps per epoch (the schedule is in steps).
        role: `"student"` (distillation recipe) or `"teacher"`.
        epochs: Optional run length; see `learning_rate_schedule`.

    Returns:
        A `keras_unikd.TorchSGD`.

    Example:

    ```python
    optimizer = build_optimizer("cifar100_resnet56_resnet20", steps_per_epoch=782)
    float(optimizer.learning_rate)  # 0.05 at step 0
    ```
    """
    preset = get_preset(preset)
    recipe = _recipe(preset, role)
    return TorchSGD(
        learning_rate=learning_rate_schedule(preset, steps_per_epoch, role, epochs),
        momentum=recipe.momentum,
        l2_decay=recipe.weight_decay,
    )


def build_terms(preset, method, seed=None, train_labels=None):
    """The terms of `method` (a method or a variant) with the preset's settings.

    The preset's settings override the method's defaults; layer names, the
    preset's or the defaults' canonical taps, are mapped to the models'
    (`layer_names`).

    Args:
        preset: A `Preset` or preset name.
        method: A key of `keras_unikd.methods.METHODS` or `VARIANTS`.
        seed: Optional seed of UniKD's sampling noise (the methods with
            UniKD's distribution terms).
        train_labels: The training set's labels, one per example index,
            for the methods that read them (CRD's memory banks:
            `keras_unikd.methods.reads_train_labels`); ignored by the
            others.

    Returns:
        A list of `keras_unikd.terms.DistillationTerm`s.

    Raises:
        ValueError: for an unknown method.

    Example:

    >>> [type(term).__name__ for term in build_terms("cifar100_vgg13_vgg8", "dkd+ls")]
    ['CrossEntropy', 'DKD']
    """
    preset = get_preset(preset)
    settings = METHODS[method_base(method)].resolve(**preset.settings(method))
    for name, role in TAP_SETTINGS.items():
        if settings.get(name) not in (None, AUTO_FEATURES):
            settings[name] = layer_names(getattr(preset, role), settings[name])
    if train_labels is not None and reads_train_labels(method):
        settings["train_labels"] = train_labels
    return method_terms(method, **with_seed(method, settings, seed))


def build_distiller(preset, teacher, student, method="unikd", seed=None, train_labels=None):
    """The model that `fit` trains for `method`.

    Args:
        preset: A `Preset` or preset name.
        teacher: The trained teacher (`keras.Model`, logits output), or a
            teacher source (e.g. a teacher cache's `teacher_source()`).
        student: The student to train.
        method: A method of `keras_unikd.methods.METHODS` (`"student"`
            returns the student itself, trained with cross-entropy; `teacher`
            is unused and may be `None`) or a variant (`"mlkd+ls"`, ...).
            The two-view methods (`TWO_VIEW_METHODS`) and their variants
            train on `((weak, strong), labels)` batches.
        seed: Optional seed of UniKD's sampling noise.
        train_labels: The training set's labels, for CRD (`build_terms`).

    Returns:
        A `keras_unikd.Distiller` with `build_terms(preset, method, seed)`,
        or the student for `"student"`.

    Raises:
        ValueError: for an unknown method.
    """
    from keras_unikd.distiller import Distiller

    terms = build_terms(preset, method, seed, train_labels)
    if not METHODS[method_base(method)].teacher:
        return student
    return Distiller(teacher, student, terms=terms)


def training_metrics(preset):
    """Compiled metrics: top-1 `accuracy` (and `top5_accuracy` on ImageNet)."""
    preset = get_preset(preset)
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if preset.dataset == IMAGENET:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    return metrics


def compile_for_training(preset, model, optimizer, **compile_kwargs):
    """Compiles `model` (from `build_distiller` or a bare network).

    Distillers define their own losses; a bare network (the teacher, or the
    student of method `"student"`) gets the sparse cross-entropy on logits.

    Args:
        preset: A `Preset` or preset name.
        model: The model to compile.
        optimizer: A Keras optimizer (see `build_optimizer`).
        **compile_kwargs: Further `compile` arguments (`jit_compile`, ...).

    Returns:
        `model`, compiled.
    """
    from keras_unikd.distiller import Distiller

    metrics = training_metrics(preset)
    if isinstance(model, Distiller):
        model.compile(optimizer=optimizer, metrics=metrics, **compile_kwargs)
    else:
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=metrics,
            **compile_kwargs,
        )
    return model
