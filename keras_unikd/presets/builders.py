"""Keras objects from a preset: models, optimizer, the model to fit.

- `build_models(preset)`: the (untrained) teacher and student;
- `build_optimizer(preset, steps_per_epoch)`: PyTorch-form SGD with the step schedule;
- `build_distiller(preset, teacher, student, method)`: the model to fit;
- `compile_for_training(preset, model, optimizer)`: compiles it;
"""

import types

import keras

from keras_unikd.optimizers import TorchSGD
from keras_unikd.presets.methods import METHODS
from keras_unikd.presets.methods import VARIANTS
from keras_unikd.presets.methods import variant_kwargs
from keras_unikd.presets.recipes import IMAGENET
from keras_unikd.presets.recipes import get_preset
from keras_unikd.presets.recipes import layer_names

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


def distiller_kwargs(preset, method):
    """Keyword arguments of the distiller that `method` uses, from the preset.

    - `"mlkd"`: MLKD's reference settings (Jin-Ying/Multi-Level-Logit-
      Distillation: `mdistiller/engine/cfg.py`, KD section, and
      `KD_ours.py`): cross-entropy weight `preset.mlkd_ce_weight` (0.1, on
      each view), MLKD weight `preset.mlkd_weight` (0.9), the temperatures
      `preset.mlkd_temperatures` (4, 3, 5, 2, 6), no warm-up, two views.
    - `"unimlkd"`: the UniKD authors' UniMLKD: MLKD over the same
      temperatures with cross-entropy and MLKD weights 1, UniKD's sampled
      distribution terms on the preset's taps (the AFF inputs) at
      `preset.unimlkd_distribution_temperature` (4), feature and
      consistency weights 1, no warm-up; every term on both views.

    Args:
        preset: A `Preset` or preset name.
        method: One of `METHODS` except `"student"` (which has none).

    Returns:
        A dict for `keras_unikd.Distiller` (`unikd`, `unimlkd`, `dkd`,
        `mlkd`, `kd`) or `keras_unikd.FitNetDistiller` (`fitnet`), without
        teacher/student. For a variant (`"mlkd+ls"`, ...), pass it to
        `variant_kwargs`, or use `build_distiller`, which does.

    Raises:
        ValueError: for an unknown method.
    """
    preset = get_preset(preset)
    if method not in METHODS:
        hint = ""
        if method in VARIANTS:
            hint = (
                f" {method!r} is a variant of {VARIANTS[method][0]!r}: use "
                f"variant_kwargs({method!r}, distiller_kwargs(preset, "
                f"{VARIANTS[method][0]!r})) or build_distiller."
            )
        raise ValueError(
            f"Unknown method {method!r}; expected one of {', '.join(METHODS)}.{hint}"
        )
    dkd = dict(
        logits_loss="dkd",
        ce_weight=1.0,
        logits_weight=1.0,
        temperature=preset.temperature,
        dkd_alpha=preset.dkd_alpha,
        dkd_beta=preset.dkd_beta,
        warmup_epochs=preset.warmup_epochs,
    )
    mlkd = dict(
        logits_loss="mlkd",
        temperature=preset.mlkd_temperatures[0],
        mlkd_temperatures=tuple(preset.mlkd_temperatures),
        warmup_epochs=0,
        views=2,
    )
    features = dict(
        distribution_loss="sampled",
        teacher_features=layer_names(preset.teacher, preset.teacher_features),
        student_features=layer_names(preset.student, preset.student_features),
    )
    if method == "unikd":
        return dict(
            dkd, distribution_temperature=preset.distribution_temperature, **features
        )
    if method == "unimlkd":
        return dict(
            mlkd,
            ce_weight=1.0,
            logits_weight=1.0,
            feature_weight=1.0,
            consistency_weight=1.0,
            distribution_temperature=preset.unimlkd_distribution_temperature,
            **features,
        )
    if method == "dkd":
        return dict(dkd, distribution_loss=None)
    if method == "mlkd":
        return dict(
            mlkd,
            distribution_loss=None,
            ce_weight=preset.mlkd_ce_weight,
            logits_weight=preset.mlkd_weight,
        )
    if method == "kd":
        return dict(
            logits_loss="kd",
            distribution_loss=None,
            ce_weight=preset.kd_ce_weight,
            logits_weight=preset.kd_weight,
            temperature=preset.kd_temperature,
            warmup_epochs=0,
        )
    if method == "fitnet":
        return dict(
            teacher_feature=layer_names(preset.teacher, preset.fitnet_feature),
            student_feature=layer_names(preset.student, preset.fitnet_feature),
            hint_weight=preset.fitnet_hint_weight,
            logits_loss=None,
            ce_weight=1.0,
        )
    return {}


def build_distiller(preset, teacher, student, method="unikd", seed=None):
    """The model that `fit` trains for `method`.

    Args:
        preset: A `Preset` or preset name.
        teacher: The trained teacher (`keras.Model`, logits output).
        student: The student to train.
        method: `"unikd"`, `"unimlkd"`, `"dkd"`, `"mlkd"` or `"kd"` (a
            `keras_unikd.Distiller`), `"fitnet"` (a
            `keras_unikd.FitNetDistiller`), `"student"` (the student
            itself, trained with cross-entropy; `teacher` is unused and may
            be `None`), or a key of `VARIANTS` (e.g. `"mlkd+ls"`: its
            method's distiller with `variant_kwargs`). `"mlkd"`,
            `"unimlkd"` and their variants train on `((weak, strong),
            labels)` batches (`TWO_VIEW_METHODS`).
        seed: Optional seed of UniKD's sampling noise (the methods with
            UniKD's distribution terms).

    Returns:
        A `keras.Model`; the trained student is `model.student` for the
        distillers and the model itself for `"student"`.

    Raises:
        ValueError: for an unknown method.
    """
    import keras_unikd

    preset = get_preset(preset)
    if method in VARIANTS:
        base = VARIANTS[method][0]
        kwargs = variant_kwargs(method, distiller_kwargs(preset, base))
    else:
        base = method
        kwargs = distiller_kwargs(preset, method)
    if base == "student":
        return student
    if base == "fitnet":
        return keras_unikd.FitNetDistiller(teacher, student, **kwargs)
    if kwargs.get("distribution_loss") is not None:
        kwargs["seed"] = seed
    return keras_unikd.Distiller(teacher=teacher, student=student, **kwargs)


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
    import keras_unikd

    metrics = training_metrics(preset)
    if isinstance(model, keras_unikd.Distiller) or hasattr(model, "student"):
        model.compile(optimizer=optimizer, metrics=metrics, **compile_kwargs)
    else:
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=metrics,
            **compile_kwargs,
        )
    return model
