"""The UniKD paper's experiments as data: one `Preset` per teacher/student pair.

A `Preset` is a frozen dataclass: which teacher and student, which dataset,
which layers are tapped, the loss hyper-parameters of every method (UniKD,
DKD, KD, FitNet and the student alone), the student's training recipe, the
teacher's training recipe and the published accuracies. Nothing here is
Keras code; `keras_unikd.presets.builders` turns a preset into models, an
optimizer and the model to fit.

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
"""

import dataclasses
import types

CIFAR100 = "cifar100"
IMAGENET = "imagenet"


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
        teacher: Teacher model name (a key of
            `keras_unikd.presets.MODEL_BUILDERS`).
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
# Tap names
# ----------------------------------------------------------------------

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
        model_name: A model name (a key of
            `keras_unikd.presets.MODEL_BUILDERS`).
        canonical_names: A name or a sequence of names (`"stage1"`, ...).

    Returns:
        The real layer name(s), same structure as `canonical_names`.
    """
    taps = MODEL_TAPS.get(model_name, {})
    if isinstance(canonical_names, str):
        return taps.get(canonical_names, canonical_names)
    return [taps.get(name, name) for name in canonical_names]
