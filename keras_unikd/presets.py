"""The UniKD paper's experiments as presets: one record per teacher/student pair.

A `Preset` is plain data (a frozen dataclass): which teacher and student,
which dataset, which layers are tapped, the loss hyper-parameters of every
method (UniKD, DKD, KD, FitNet and the student alone), the student's
training recipe, the teacher's training recipe and the published
accuracies. The helpers below turn a preset into Keras objects:

- `build_models(preset)`: the (untrained) teacher and student;
- `build_optimizer(preset, steps_per_epoch)`: SGD with the step schedule;
- `build_distiller(preset, teacher, student, method)`: the model to fit;
- `compile_for_training(preset, model, optimizer)`: compiles it.

Sources of the numbers:

- Recipes and DKD hyper-parameters: mdistiller's configs
  (`configs/cifar100/dkd/*.yaml`, `configs/imagenet/*/dkd.yaml`, `kd.yaml`)
  and defaults (`mdistiller/engine/cfg.py`), which UniKD's reference code
  builds on. DKD's beta is 8 unless a config sets it (2 for ResNet56->20
  and ResNet110->32, 6 for WRN and VGG teachers, 0.5 for ImageNet
  ResNet34->18, 2 for ImageNet ResNet50->MobileNetV1).
- Published top-1 accuracies: the DKD paper (Zhao et al., CVPR 2022,
  Tables 1-3) for teachers, students, KD and DKD; UniKD numbers only where
  the method spec (`/work/shared/UNIKD_METHOD.md`) gives one.

Example:

```python
from keras_unikd import presets

preset = presets.get_preset("cifar100_resnet32x4_resnet8x4")
teacher, student = presets.build_models(preset)
optimizer = presets.build_optimizer(preset, steps_per_epoch=782)
distiller = presets.build_distiller(preset, teacher, student, "unikd")
presets.compile_for_training(preset, distiller, optimizer)
```
"""

import dataclasses
import types

import keras

CIFAR100 = "cifar100"
IMAGENET = "imagenet"
METHODS = ("unikd", "dkd", "kd", "fitnet", "student")


# ----------------------------------------------------------------------
# Data records
# ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training schedule: SGD with momentum and step learning-rate decay.

    Args:
        epochs: Number of epochs.
        batch_size: Global batch size.
        learning_rate: Initial learning rate.
        lr_decay_epochs: Epochs after which the learning rate is multiplied
            by `lr_decay_rate` (e.g. `(150, 180, 210)`).
        lr_decay_rate: Multiplier of each decay.
        momentum: SGD momentum.
        weight_decay: L2 weight decay, coupled to the gradient as in
            PyTorch's `SGD(weight_decay=...)`.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    lr_decay_epochs: tuple
    lr_decay_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclasses.dataclass(frozen=True)
class Published:
    """Published top-1 accuracies (%) of one teacher/student pair.

    `None` means the number is not known from our sources.
    """

    teacher: float = None
    student: float = None
    kd: float = None
    dkd: float = None
    unikd: float = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Preset:
    """One experiment of the paper. Every field is data.

    Layer names are *canonical tap names* (`stem`, `stage1`, ...,
    `stage1_preact`, ..., `pool`, `logits`, as in the model zoo); for models
    that name their layers otherwise (keras.applications), `MODEL_TAPS`
    maps canonical names to real layer names (see `layer_names`).

    Args:
        name: Registry key, e.g. `"cifar100_resnet32x4_resnet8x4"`.
        dataset: `"cifar100"` or `"imagenet"`.
        num_classes: Number of classes.
        image_size: Input height and width.
        teacher: Teacher model name (see `MODEL_BUILDERS`).
        student: Student model name.
        architecture: `"same"` or `"different"` (the paper's two tables).
        teacher_features: Teacher taps of UniKD (its raw stage-1
            pre-activation feature, as in the reference code).
        student_features: Student taps of UniKD, shallow to deep.
        fitnet_feature: FitNet's hint layer (the middle stage), tapped in
            both networks.
        temperature: DKD temperature (also UniKD's logits term).
        distribution_temperature: UniKD's distribution temperature.
        dkd_alpha: DKD target-class weight.
        dkd_beta: DKD non-target weight.
        warmup_epochs: Linear warm-up of the DKD term (DKD and UniKD).
        kd_temperature: Temperature of plain KD.
        kd_ce_weight: Cross-entropy weight of plain KD.
        kd_weight: KD-term weight of plain KD.
        fitnet_hint_weight: Weight of FitNet's hint MSE.
        recipe: The student's training recipe (all methods).
        teacher_recipe: The recipe that trains the teacher from scratch.
        published: Published accuracies.
        config_source: The mdistiller config the numbers come from.
    """

    name: str
    dataset: str
    num_classes: int
    image_size: int
    teacher: str
    student: str
    architecture: str
    teacher_features: tuple
    student_features: tuple
    recipe: Recipe
    teacher_recipe: Recipe
    published: Published
    config_source: str
    fitnet_feature: str = "stage2"
    temperature: float = 4.0
    distribution_temperature: float = 1.0
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    warmup_epochs: int = 20
    kd_temperature: float = 4.0
    kd_ce_weight: float = 0.1
    kd_weight: float = 0.9
    fitnet_hint_weight: float = 100.0

    @property
    def input_shape(self):
        """`(image_size, image_size, 3)`."""
        return (self.image_size, self.image_size, 3)

    def to_dict(self):
        """The preset as a JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------

CIFAR_RECIPE = Recipe(
    epochs=240, batch_size=64, learning_rate=0.05, lr_decay_epochs=(150, 180, 210)
)
# ShuffleNet / MobileNet students train with a 5x smaller learning rate.
CIFAR_LIGHT_STUDENT_RECIPE = dataclasses.replace(CIFAR_RECIPE, learning_rate=0.01)
IMAGENET_RECIPE = Recipe(
    epochs=100,
    batch_size=512,
    learning_rate=0.2,
    lr_decay_epochs=(30, 60, 90),
    weight_decay=1e-4,
)
# The ImageNet teachers of the KD literature are torchvision's pretrained
# ResNets, trained with the classic recipe below (90 epochs, x0.1 every 30).
IMAGENET_TEACHER_RECIPE = Recipe(
    epochs=90,
    batch_size=256,
    learning_rate=0.1,
    lr_decay_epochs=(30, 60),
    weight_decay=1e-4,
)

CIFAR_STUDENT_FEATURES = ("stage1", "stage2", "stage3", "pool")
CIFAR_STUDENT_FEATURES_4 = ("stage1", "stage2", "stage3", "stage4", "pool")
TEACHER_FEATURES = ("stage1_preact",)


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

# Canonical tap name -> layer name, for models that do not use the zoo's
# names. keras.applications.ResNet50 stage k is "conv{k+1}"; MobileNet (V1)
# stages are the pointwise convolutions that end each resolution (56, 28,
# 14 and 7 pixels on 224x224 inputs; Keras' MobileNet uses ReLU6).
MODEL_TAPS = types.MappingProxyType(
    {
        "resnet50_imagenet": types.MappingProxyType(
            {
                "stem": "conv1_relu",
                "stage1_preact": "conv2_block3_add",
                "stage1": "conv2_block3_out",
                "stage2_preact": "conv3_block4_add",
                "stage2": "conv3_block4_out",
                "stage3_preact": "conv4_block6_add",
                "stage3": "conv4_block6_out",
                "stage4_preact": "conv5_block3_add",
                "stage4": "conv5_block3_out",
            }
        ),
        "mobilenet_imagenet": types.MappingProxyType(
            {
                "stem": "conv1_relu",
                "stage1_preact": "conv_pw_3_bn",
                "stage1": "conv_pw_3_relu",
                "stage2_preact": "conv_pw_5_bn",
                "stage2": "conv_pw_5_relu",
                "stage3_preact": "conv_pw_11_bn",
                "stage3": "conv_pw_11_relu",
                "stage4_preact": "conv_pw_13_bn",
                "stage4": "conv_pw_13_relu",
            }
        ),
    }
)


# ----------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------


def _cifar(
    teacher,
    student,
    architecture,
    published,
    config,
    light_student=False,
    student_features=CIFAR_STUDENT_FEATURES,
    **hyper,
):
    return Preset(
        name=f"cifar100_{teacher}_{student}",
        dataset=CIFAR100,
        num_classes=100,
        image_size=32,
        teacher=teacher,
        student=student,
        architecture=architecture,
        teacher_features=TEACHER_FEATURES,
        student_features=student_features,
        recipe=CIFAR_LIGHT_STUDENT_RECIPE if light_student else CIFAR_RECIPE,
        teacher_recipe=CIFAR_RECIPE,
        published=published,
        config_source=f"mdistiller configs/cifar100/dkd/{config}.yaml",
        **hyper,
    )


def _imagenet(teacher, student, published, config, **hyper):
    return Preset(
        name=f"imagenet_{teacher}_{student}",
        dataset=IMAGENET,
        num_classes=1000,
        image_size=224,
        teacher=f"{teacher}_imagenet",
        student=f"{student}_imagenet",
        architecture="same" if teacher[:6] == student[:6] else "different",
        teacher_features=TEACHER_FEATURES,
        student_features=CIFAR_STUDENT_FEATURES_4,
        recipe=IMAGENET_RECIPE,
        teacher_recipe=IMAGENET_TEACHER_RECIPE,
        published=published,
        config_source=f"mdistiller configs/imagenet/{config}/dkd.yaml",
        temperature=1.0,
        warmup_epochs=1,
        kd_temperature=1.0,
        kd_ce_weight=0.5,
        kd_weight=0.5,
        **hyper,
    )


_PRESET_LIST = (
    # Same architecture family (DKD paper, Table 1).
    _cifar(
        "resnet56", "resnet20", "same",
        Published(72.34, 69.06, 70.66, 71.97), "res56_res20", dkd_beta=2.0,
    ),
    _cifar(
        "resnet110", "resnet32", "same",
        Published(74.31, 71.14, 73.08, 74.11), "res110_res32", dkd_beta=2.0,
    ),
    _cifar(
        "resnet32x4", "resnet8x4", "same",
        Published(
            79.42, 72.50, 73.33, 76.32,
            note="The UniKD authors' MLKD-based checkpoint (480 epochs, "
            "UniMLKD) is labelled 78.18.",
        ),
        "res32x4_res8x4",
    ),
    _cifar(
        "wrn_40_2", "wrn_16_2", "same",
        Published(75.61, 73.26, 74.92, 76.23), "wrn40_2_wrn_16_2", dkd_beta=6.0,
    ),
    _cifar(
        "wrn_40_2", "wrn_40_1", "same",
        Published(75.61, 71.98, 73.54, 74.81), "wrn40_2_wrn_40_1", dkd_beta=6.0,
    ),
    _cifar(
        "vgg13", "vgg8", "same",
        Published(74.64, 70.36, 72.98, 74.68), "vgg13_vgg8",
        student_features=CIFAR_STUDENT_FEATURES_4, dkd_beta=6.0,
    ),
    # Different architecture families (DKD paper, Table 2).
    _cifar(
        "resnet32x4", "shufflenetv1", "different",
        Published(79.42, 70.50, 74.07, 76.45), "res32x4_shuv1", light_student=True,
    ),
    _cifar(
        "resnet32x4", "shufflenetv2", "different",
        Published(79.42, 71.82, 74.45, 77.07), "res32x4_shuv2", light_student=True,
    ),
    _cifar(
        "wrn_40_2", "shufflenetv1", "different",
        Published(75.61, 70.50, 74.83, 76.70), "wrn40_2_shuv1", light_student=True,
    ),
    _cifar(
        "vgg13", "mobilenetv2", "different",
        Published(74.64, 64.60, 67.37, 69.71), "vgg13_mv2",
        light_student=True, student_features=CIFAR_STUDENT_FEATURES_4, dkd_beta=6.0,
    ),
    _cifar(
        "resnet50", "mobilenetv2", "different",
        Published(79.34, 64.60, 67.35, 70.35), "res50_mv2",
        light_student=True, student_features=CIFAR_STUDENT_FEATURES_4,
    ),
    # ImageNet (DKD paper, Table 3); teachers are torchvision's pretrained
    # ResNets in the literature.
    _imagenet(
        "resnet34", "resnet18",
        Published(73.31, 69.75, 71.03, 71.70), "r34_r18", dkd_beta=0.5,
    ),
    _imagenet(
        "resnet50", "mobilenet",
        Published(76.16, 68.87, 70.50, 72.05), "r50_mv1", dkd_beta=2.0,
    ),
)

PRESETS = types.MappingProxyType({preset.name: preset for preset in _PRESET_LIST})


def list_presets(dataset=None):
    """Names of the registered presets, in the paper's order.

    Args:
        dataset: Optional `"cifar100"` or `"imagenet"` filter.

    Returns:
        A list of preset names.
    """
    return [p.name for p in _PRESET_LIST if dataset is None or p.dataset == dataset]


def get_preset(name):
    """Returns the registered `Preset` called `name`.

    Args:
        name: A preset name (see `list_presets()`), or a `Preset`, which is
            returned unchanged.

    Returns:
        The `Preset`.

    Raises:
        ValueError: if no preset has that name; the message lists them all.

    Example:

    ```python
    preset = get_preset("cifar100_vgg13_vgg8")
    preset.dkd_beta  # 6.0
    ```
    """
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Known presets: {', '.join(list_presets())}."
        )
    return PRESETS[name]


def layer_names(model_name, canonical_names):
    """Maps canonical tap names to the model's real layer names.

    Args:
        model_name: A key of `MODEL_BUILDERS`.
        canonical_names: A name or a sequence of names (`"stage1"`, ...).

    Returns:
        The real layer name(s), same structure as `canonical_names`.
    """
    taps = MODEL_TAPS.get(model_name, {})
    if isinstance(canonical_names, str):
        return taps.get(canonical_names, canonical_names)
    return [taps.get(name, name) for name in canonical_names]


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


@keras.saving.register_keras_serializable(package="keras_unikd")
class CoupledWeightDecaySGD(keras.optimizers.SGD):
    """SGD whose weight decay is added to the gradient, as in PyTorch.

    `keras.optimizers.SGD(weight_decay=...)` shrinks the weights directly
    (decoupled decay, which skips the momentum buffer). The KD recipes were
    tuned with PyTorch's `SGD(weight_decay=wd)`, which adds `wd * w` to the
    gradient *before* momentum; with momentum 0.9 that decays weights about
    10x more strongly in steady state. This optimizer reproduces it for every
    trainable variable (the student's and the distillation modules').

    Args:
        l2_decay: The coupled weight decay `wd`.
        **kwargs: `keras.optimizers.SGD` arguments (`learning_rate`,
            `momentum`, ...).

    Example:

    ```python
    optimizer = CoupledWeightDecaySGD(l2_decay=5e-4, learning_rate=0.05,
                                      momentum=0.9)
    ```
    """

    def __init__(self, l2_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.l2_decay = float(l2_decay)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2_decay:
            gradient = keras.ops.add(
                keras.ops.cast(gradient, variable.dtype),
                keras.ops.multiply(
                    keras.ops.cast(self.l2_decay, variable.dtype), variable
                ),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["l2_decay"] = self.l2_decay
        return config


def build_optimizer(preset, steps_per_epoch, role="student", epochs=None):
    """The recipe's optimizer: SGD, momentum, coupled L2, step schedule.

    Args:
        preset: A `Preset` or preset name.
        steps_per_epoch: Optimizer steps per epoch (the schedule is in steps).
        role: `"student"` (distillation recipe) or `"teacher"`.
        epochs: Optional run length; see `learning_rate_schedule`.

    Returns:
        A `CoupledWeightDecaySGD`.

    Example:

    ```python
    optimizer = build_optimizer("cifar100_resnet56_resnet20", steps_per_epoch=782)
    float(optimizer.learning_rate)  # 0.05 at step 0
    ```
    """
    preset = get_preset(preset)
    recipe = _recipe(preset, role)
    return CoupledWeightDecaySGD(
        l2_decay=recipe.weight_decay,
        learning_rate=learning_rate_schedule(preset, steps_per_epoch, role, epochs),
        momentum=recipe.momentum,
    )


def distiller_kwargs(preset, method):
    """Keyword arguments of the distiller that `method` uses, from the preset.

    Args:
        preset: A `Preset` or preset name.
        method: One of `METHODS` except `"student"` (which has none).

    Returns:
        A dict for `keras_unikd.Distiller` (`unikd`, `dkd`, `kd`) or
        `keras_unikd.FitNetDistiller` (`fitnet`), without teacher/student.

    Raises:
        ValueError: for an unknown method.
    """
    preset = get_preset(preset)
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {', '.join(METHODS)}.")
    dkd = dict(
        logits_loss="dkd",
        ce_weight=1.0,
        logits_weight=1.0,
        temperature=preset.temperature,
        dkd_alpha=preset.dkd_alpha,
        dkd_beta=preset.dkd_beta,
        warmup_epochs=preset.warmup_epochs,
    )
    if method == "unikd":
        return dict(
            dkd,
            distribution_loss="sampled",
            distribution_temperature=preset.distribution_temperature,
            teacher_features=layer_names(preset.teacher, preset.teacher_features),
            student_features=layer_names(preset.student, preset.student_features),
        )
    if method == "dkd":
        return dict(dkd, distribution_loss=None)
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
        method: `"unikd"`, `"dkd"` or `"kd"` (a `keras_unikd.Distiller`),
            `"fitnet"` (a `keras_unikd.FitNetDistiller`) or `"student"`
            (the student itself, trained with cross-entropy; `teacher` is
            unused and may be `None`).
        seed: Optional seed of UniKD's sampling noise.

    Returns:
        A `keras.Model`; the trained student is `model.student` for the
        distillers and the model itself for `"student"`.

    Raises:
        ValueError: for an unknown method.
    """
    import keras_unikd

    preset = get_preset(preset)
    kwargs = distiller_kwargs(preset, method)
    if method == "student":
        return student
    if method == "fitnet":
        return keras_unikd.FitNetDistiller(teacher, student, **kwargs)
    if method == "unikd":
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
