"""The UniKD paper's experiments as data: one `Preset` per teacher/student pair
and recipe.

A `Preset` is a frozen dataclass: which teacher and student, which dataset,
the student's training recipe, the teacher's training recipe, the published
accuracies, and in one mapping (`Preset.methods`) the settings that the pair
gives each method of the method table (`keras_unikd.methods`: UniKD,
UniMLKD, DKD, MLKD, KD, FitNet and the student alone), over the methods'
reference defaults. The DKD paper's pairs carry its recipe; `<pair>_mlkd`
carry MLKD's and `cifar100_resnet32x4_resnet8x4_unimlkd` the UniKD authors'
UniMLKD recipe. Nothing here is Keras code; `keras_unikd.presets.builders`
turns a preset into models, an optimizer and the model to fit.

Sources of the numbers:

- Recipes and DKD hyper-parameters: mdistiller's configs
  (`configs/cifar100/dkd/*.yaml`, `configs/imagenet/*/dkd.yaml`, `kd.yaml`)
  and defaults (`mdistiller/engine/cfg.py`), which UniKD's reference code
  builds on. DKD's beta is 8 unless a config sets it (2 for ResNet56->20
  and ResNet110->32, 6 for WRN and VGG teachers, 0.5 for ImageNet
  ResNet34->18, 2 for ImageNet ResNet50->MobileNetV1).
- Published top-1 accuracies: the DKD paper (Zhao et al., CVPR 2022,
  Tables 1-3) for teachers, students, KD and DKD; UniKD's only where its
  authors give one (their ResNet32x4 -> ResNet8x4 checkpoint's label).
- MLKD (Jin et al., CVPR 2023): its loss settings from its code's defaults
  (Jin-Ying/Multi-Level-Logit-Distillation, `mdistiller/engine/cfg.py`, KD
  section: temperature 4, cross-entropy weight 0.1, distillation weight
  0.9; `KD_ours.py`: the temperatures 4, 3, 5, 2, 6, cross-entropy on both
  views, no warm-up) and its recipes from `configs/cifar100/ours/*.yaml`.
  Its published numbers, and those with logit standardization (Sun et al.,
  CVPR 2024; KD+LS, DKD+LS, MLKD+LS), from the tables of the README of
  sunshangquan/logit-standardization-KD, which lists MLKD's beside its own.
- UniMLKD, the UniKD authors' best CIFAR-100 recipe (their fork
  FabienCode/mdistiller, class `UniMLKD` in
  `mdistiller/distillers/UniKDMLReview.py`, config
  `configs/UniLogits/cifar/mlkd/res324_84.yaml`).
"""

import dataclasses
import json
import types
import typing

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

    `None` means the number is not known from our sources. The fields are
    named after the methods (`keras_unikd.methods.METHODS`), a `+ls`
    variant with `_ls` (`kd_ls` is `"kd+ls"`): see `Published.of`.
    """

    teacher: float = None
    student: float = None
    kd: float = None
    dkd: float = None
    unikd: float = None
    mlkd: float = None
    unimlkd: float = None
    kd_ls: float = None
    dkd_ls: float = None
    mlkd_ls: float = None
    note: str = ""

    def of(self, method):
        """The published top-1 of `method` (`"kd"`, `"mlkd+ls"`, ...), or `None`."""
        value = getattr(self, method.replace("+", "_"), None)
        return value if isinstance(value, (int, float)) else None


@dataclasses.dataclass(frozen=True)
class Preset:
    """One experiment of the paper. Every field is data.

    Layer names in `methods` are the models' real layer names: the zoo's
    canonical tap names (`stem`, `stage1`, ..., `stage1_preact`, ...,
    `pool`), mapped through `MODEL_TAPS` for models that name their layers
    otherwise (keras.applications; see `layer_names`).

    Args:
        name: Registry key, e.g. `"cifar100_resnet32x4_resnet8x4"`.
        dataset: `"cifar100"` or `"imagenet"`.
        num_classes: Number of classes.
        image_size: Input height and width.
        teacher: Teacher model name (a key of
            `keras_unikd.presets.MODEL_BUILDERS`).
        student: Student model name.
        architecture: `"same"` or `"different"` (the paper's two tables).
        recipe: The student's training recipe (all methods).
        teacher_recipe: The recipe that trains the teacher from scratch.
        published: Published accuracies.
        config_source: The config the numbers come from.
        methods: `{method: settings}`: each method of
            `keras_unikd.methods.METHODS` with the settings this pair gives
            it over the method's reference defaults (DKD's beta, the taps of
            UniKD and FitNet, ImageNet's temperatures); `settings(method)`
            resolves a variant to its method's.
        method: The method whose published recipe this preset is, or
            `None` for the DKD paper's recipe, which every method uses.
    """

    name: str
    dataset: str
    num_classes: int
    image_size: int
    teacher: str
    student: str
    architecture: str
    recipe: Recipe
    teacher_recipe: Recipe
    published: Published
    config_source: str
    methods: typing.Mapping[str, typing.Mapping]
    method: str = None

    @property
    def input_shape(self):
        """`(image_size, image_size, 3)`."""
        return (self.image_size, self.image_size, 3)

    @property
    def two_views(self):
        """Whether the preset's own method trains on two views of each example."""
        from keras_unikd.methods import method_views

        return self.method is not None and method_views(self.method) == 2

    def settings(self, method):
        """The settings this preset gives `method` (a method or a variant).

        Returns:
            A new dict, for `keras_unikd.methods.method_terms(method, **it)`.

        Raises:
            ValueError: for an unknown method.
        """
        from keras_unikd.methods import get_method

        base = getattr(get_method(method), "method", method)
        return dict(self.methods.get(base, {}))

    def to_dict(self):
        """The preset as a JSON-serialisable dict (tuples become lists)."""
        record = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "methods"
        }
        for field in ("recipe", "teacher_recipe", "published"):
            record[field] = dataclasses.asdict(record[field])
        record["methods"] = {name: dict(value) for name, value in self.methods.items()}
        record["two_views"] = self.two_views
        return json.loads(json.dumps(record))


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

# UniKD's taps in the reference: the teacher's raw stage-1 feature, and the
# student's stages (the AFF inputs) with its pooled vector; FitNet's hint is
# the middle stage of both.
CIFAR_STUDENT_FEATURES = ("stage1", "stage2", "stage3", "pool")
CIFAR_STUDENT_FEATURES_4 = ("stage1", "stage2", "stage3", "stage4", "pool")
TEACHER_FEATURES = ("stage1_preact",)
FITNET_FEATURE = "stage2"
# ReviewKD's weight where mdistiller has a CIFAR-100 config for the pair
# (configs/cifar100/reviewkd.yaml); elsewhere its cfg.py default, 1.
REVIEWKD_WEIGHTS = types.MappingProxyType({("resnet32x4", "resnet8x4"): 5.0})


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


# ----------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------


def pair_methods(
    teacher,
    student,
    dkd_beta=8.0,
    student_features=CIFAR_STUDENT_FEATURES,
    temperature=None,
    dkd_warmup_epochs=None,
    kd=None,
    reviewkd_weight=None,
):
    """Each method's settings for one teacher/student pair (over the table's
    reference defaults): the values the pair's configs change.

    Args:
        teacher: The teacher's model name (for `layer_names`).
        student: The student's model name.
        dkd_beta: DKD's beta (also UniKD's, which distils with DKD).
        student_features: UniKD's student taps, shallow to deep (canonical).
        temperature: DKD's (and UniKD's logits) temperature, if not 4.
        dkd_warmup_epochs: DKD's warm-up, if not 20 epochs.
        kd: KD's settings, if not CE 0.1, KD 0.9 at T = 4.
        reviewkd_weight: ReviewKD's weight, where the pair's config sets one.

    Returns:
        A mapping `{method: settings}` for `Preset.methods`.
    """
    dkd = {"dkd_beta": dkd_beta}
    if temperature is not None:
        dkd["temperature"] = temperature
    if dkd_warmup_epochs is not None:
        dkd["warmup_epochs"] = dkd_warmup_epochs
    taps = {
        "teacher_features": tuple(layer_names(teacher, TEACHER_FEATURES)),
        "student_features": tuple(layer_names(student, student_features)),
    }
    settings = {
        "unikd": {**dkd, **taps},
        # MLKD's levels as the reference sums them (it ran at batch 64).
        "unimlkd": dict(taps, mlkd_level_scaling="reference"),
        "dkd": dkd,
        "mlkd": {"mlkd_level_scaling": "reference"},
        "kd": dict(kd or {}),
        "fitnet": {
            "teacher_feature": layer_names(teacher, FITNET_FEATURE),
            "student_feature": layer_names(student, FITNET_FEATURE),
            "hint_weight": 100.0,
        },
        # The reference's weights (keras_unikd.methods' FITNET_HINT_WEIGHT and
        # AT_FEATURE_WEIGHT), given so that they do not warn as defaults.
        "at": {"feature_weight": 1000.0},
        **({"reviewkd": {"feature_weight": reviewkd_weight}} if reviewkd_weight else {}),
        "student": {},
    }
    return types.MappingProxyType(
        {name: types.MappingProxyType(value) for name, value in settings.items()}
    )


def _cifar(
    teacher,
    student,
    architecture,
    published,
    config,
    light_student=False,
    student_features=CIFAR_STUDENT_FEATURES,
    dkd_beta=8.0,
):
    return Preset(
        name=f"cifar100_{teacher}_{student}",
        dataset=CIFAR100,
        num_classes=100,
        image_size=32,
        teacher=teacher,
        student=student,
        architecture=architecture,
        recipe=CIFAR_LIGHT_STUDENT_RECIPE if light_student else CIFAR_RECIPE,
        teacher_recipe=CIFAR_RECIPE,
        published=published,
        config_source=f"mdistiller configs/cifar100/dkd/{config}.yaml",
        methods=pair_methods(
            teacher,
            student,
            dkd_beta,
            student_features,
            reviewkd_weight=REVIEWKD_WEIGHTS.get((teacher, student)),
        ),
    )


def _imagenet(teacher, student, published, config, dkd_beta):
    teacher_model, student_model = f"{teacher}_imagenet", f"{student}_imagenet"
    return Preset(
        name=f"imagenet_{teacher}_{student}",
        dataset=IMAGENET,
        num_classes=1000,
        image_size=224,
        teacher=teacher_model,
        student=student_model,
        architecture="same" if teacher[:6] == student[:6] else "different",
        recipe=IMAGENET_RECIPE,
        teacher_recipe=IMAGENET_TEACHER_RECIPE,
        published=published,
        config_source=f"mdistiller configs/imagenet/{config}/dkd.yaml",
        # mdistiller's ImageNet configs: T = 1 for KD and DKD, DKD warms up
        # over 1 epoch, KD weighs CE and KD 0.5 each.
        methods=pair_methods(
            teacher_model,
            student_model,
            dkd_beta,
            CIFAR_STUDENT_FEATURES_4,
            temperature=1.0,
            dkd_warmup_epochs=1,
            kd={"temperature": 1.0, "ce_weight": 0.5, "logits_weight": 0.5},
        ),
    )


# KD+LS and DKD+LS: the logit-standardization reference's README (Sun et al.,
# CVPR 2024), trained with the DKD paper's recipe of each pair.
_PAPER_PRESETS = (
    # Same architecture family (DKD paper, Table 1).
    _cifar(
        "resnet56", "resnet20", "same",
        Published(72.34, 69.06, 70.66, 71.97, kd_ls=71.43, dkd_ls=72.32),
        "res56_res20", dkd_beta=2.0,
    ),
    _cifar(
        "resnet110", "resnet32", "same",
        Published(74.31, 71.14, 73.08, 74.11, kd_ls=74.17, dkd_ls=74.29),
        "res110_res32", dkd_beta=2.0,
    ),
    _cifar(
        "resnet32x4", "resnet8x4", "same",
        Published(
            79.42, 72.50, 73.33, 76.32, kd_ls=76.62, dkd_ls=77.01,
            note="The UniKD authors' MLKD-based checkpoint (480 epochs, "
            "UniMLKD) is labelled 78.18: preset "
            "cifar100_resnet32x4_resnet8x4_unimlkd.",
        ),
        "res32x4_res8x4",
    ),
    _cifar(
        "wrn_40_2", "wrn_16_2", "same",
        Published(75.61, 73.26, 74.92, 76.23, kd_ls=76.11, dkd_ls=76.39),
        "wrn40_2_wrn_16_2", dkd_beta=6.0,
    ),
    _cifar(
        "wrn_40_2", "wrn_40_1", "same",
        Published(75.61, 71.98, 73.54, 74.81, kd_ls=74.37, dkd_ls=74.89),
        "wrn40_2_wrn_40_1", dkd_beta=6.0,
    ),
    _cifar(
        "vgg13", "vgg8", "same",
        Published(74.64, 70.36, 72.98, 74.68, kd_ls=74.36, dkd_ls=74.81),
        "vgg13_vgg8", student_features=CIFAR_STUDENT_FEATURES_4, dkd_beta=6.0,
    ),
    # Different architecture families (DKD paper, Table 2).
    _cifar(
        "resnet32x4", "shufflenetv1", "different",
        Published(79.42, 70.50, 74.07, 76.45), "res32x4_shuv1", light_student=True,
    ),
    _cifar(
        "resnet32x4", "shufflenetv2", "different",
        Published(79.42, 71.82, 74.45, 77.07, kd_ls=75.56, dkd_ls=77.37),
        "res32x4_shuv2", light_student=True,
    ),
    _cifar(
        "wrn_40_2", "shufflenetv1", "different",
        Published(75.61, 70.50, 74.83, 76.70), "wrn40_2_shuv1", light_student=True,
    ),
    _cifar(
        "vgg13", "mobilenetv2", "different",
        Published(74.64, 64.60, 67.37, 69.71, kd_ls=68.61, dkd_ls=69.98),
        "vgg13_mv2",
        light_student=True, student_features=CIFAR_STUDENT_FEATURES_4, dkd_beta=6.0,
    ),
    _cifar(
        "resnet50", "mobilenetv2", "different",
        Published(79.34, 64.60, 67.35, 70.35, kd_ls=69.02, dkd_ls=70.45),
        "res50_mv2",
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

# MLKD's recipes (configs/cifar100/ours/*.yaml of its code): learning rate
# 0.025 and 240 epochs for the same-family pairs; 480 epochs at 0.01 for
# ResNet32x4 -> ShuffleNetV1/V2 and at 0.0025 for WRN-40-2 -> ShuffleNetV1
# and the MobileNetV2 students. The decay epochs stay 150/180/210.
MLKD_RECIPE = Recipe(
    epochs=240, batch_size=64, learning_rate=0.025, lr_decay_epochs=(150, 180, 210)
)
MLKD_SHUFFLENET_RECIPE = dataclasses.replace(MLKD_RECIPE, epochs=480, learning_rate=0.01)
MLKD_LIGHT_STUDENT_RECIPE = dataclasses.replace(MLKD_RECIPE, epochs=480, learning_rate=0.0025)
# The UniKD authors' UniMLKD recipe (ResNet32x4 -> ResNet8x4).
UNIMLKD_RECIPE = dataclasses.replace(MLKD_RECIPE, epochs=480)


def _method_preset(pair, method, recipe, published, config_source):
    """The preset of `pair` (a paper preset's name) with `method`'s recipe.

    Taps and the other methods' hyper-parameters stay the pair's; the
    recipe, the published numbers and the source are the method's.
    """
    (base,) = [p for p in _PAPER_PRESETS if p.name == pair]
    return dataclasses.replace(
        base,
        name=f"{pair}_{method}",
        method=method,
        recipe=recipe,
        published=dataclasses.replace(
            published, teacher=base.published.teacher, student=base.published.student
        ),
        config_source=config_source,
    )


def _mlkd(pair, config, recipe, mlkd, mlkd_ls=None, note=""):
    return _method_preset(
        f"cifar100_{pair}",
        "mlkd",
        recipe,
        Published(mlkd=mlkd, mlkd_ls=mlkd_ls, note=note),
        f"Jin-Ying/Multi-Level-Logit-Distillation configs/cifar100/ours/{config}.yaml",
    )


# MLKD+LS was trained by the logit-standardization reference with its own
# MLKD configs (configs/cifar100/mlkd/*.yaml), which for ResNet32x4 ->
# ResNet8x4 and ResNet110 -> ResNet32 run 480 epochs, not 240.
_LS_480 = "MLKD+LS was trained 480 epochs (logit-standardization reference's config)."
_MLKD_PRESETS = (
    _mlkd("resnet56_resnet20", "res56_res20", MLKD_RECIPE, 72.19, 72.33),
    _mlkd("resnet110_resnet32", "res110_res32", MLKD_RECIPE, 74.11, 74.32, _LS_480),
    _mlkd("resnet32x4_resnet8x4", "res32x4_res8x4", MLKD_RECIPE, 77.08, 78.28, _LS_480),
    _mlkd("wrn_40_2_wrn_16_2", "wrn40_2_wrn_16_2", MLKD_RECIPE, 76.63, 76.95),
    _mlkd("wrn_40_2_wrn_40_1", "wrn40_2_wrn_40_1", MLKD_RECIPE, 75.35, 75.56),
    _mlkd("vgg13_vgg8", "vgg13_vgg8", MLKD_RECIPE, 75.18, 75.22),
    _mlkd(
        "resnet32x4_shufflenetv1", "res32x4_shuv1", MLKD_SHUFFLENET_RECIPE, None,
        note="MLKD's number for this pair is not in our sources.",
    ),
    _mlkd("resnet32x4_shufflenetv2", "res32x4_shuv2", MLKD_SHUFFLENET_RECIPE, 78.44, 78.76),
    _mlkd(
        "wrn_40_2_shufflenetv1", "wrn40_2_shuv1", MLKD_LIGHT_STUDENT_RECIPE, None,
        note="MLKD's number for this pair is not in our sources.",
    ),
    _mlkd("vgg13_mobilenetv2", "vgg13_mv2", MLKD_LIGHT_STUDENT_RECIPE, 70.57, 70.94),
    _mlkd("resnet50_mobilenetv2", "res50_mv2", MLKD_LIGHT_STUDENT_RECIPE, 71.04, 71.19),
)

_UNIMLKD_PRESETS = (
    _method_preset(
        "cifar100_resnet32x4_resnet8x4",
        "unimlkd",
        UNIMLKD_RECIPE,
        Published(
            unimlkd=78.18,
            note="The UniKD authors' checkpoint label; MLKD alone (240 epochs) "
            "is 77.08: preset cifar100_resnet32x4_resnet8x4_mlkd.",
        ),
        "FabienCode/mdistiller configs/UniLogits/cifar/mlkd/res324_84.yaml",
    ),
)

_PRESET_LIST = _PAPER_PRESETS + _MLKD_PRESETS + _UNIMLKD_PRESETS

PRESETS = types.MappingProxyType({preset.name: preset for preset in _PRESET_LIST})


def list_presets(dataset=None):
    """Names of the registered presets.

    The DKD paper's pairs come first, in its order (their `method` is
    `None`: every method trains with their recipe), then MLKD's recipes of
    the same pairs (`<pair>_mlkd`) and the UniKD authors' UniMLKD recipe
    (`cifar100_resnet32x4_resnet8x4_unimlkd`).

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

    >>> get_preset("cifar100_vgg13_vgg8").settings("dkd")
    {'dkd_beta': 6.0}
    """
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Known presets: {', '.join(list_presets())}."
        )
    return PRESETS[name]
