"""Name -> builder registry of the CIFAR-100 distillation model zoo."""

from keras_unikd.models.cifar_resnet import resnet8
from keras_unikd.models.cifar_resnet import resnet8x4
from keras_unikd.models.cifar_resnet import resnet14
from keras_unikd.models.cifar_resnet import resnet20
from keras_unikd.models.cifar_resnet import resnet32
from keras_unikd.models.cifar_resnet import resnet32x4
from keras_unikd.models.cifar_resnet import resnet44
from keras_unikd.models.cifar_resnet import resnet56
from keras_unikd.models.cifar_resnet import resnet110
from keras_unikd.models.cifar_resnet_v2 import resnet18
from keras_unikd.models.cifar_resnet_v2 import resnet34
from keras_unikd.models.cifar_resnet_v2 import resnet50
from keras_unikd.models.mobilenet_v2 import mobilenetv2
from keras_unikd.models.shufflenet import shufflenetv1
from keras_unikd.models.shufflenet import shufflenetv2
from keras_unikd.models.vgg import vgg8
from keras_unikd.models.vgg import vgg11
from keras_unikd.models.vgg import vgg13
from keras_unikd.models.vgg import vgg16
from keras_unikd.models.vgg import vgg19
from keras_unikd.models.wide_resnet import wrn_16_1
from keras_unikd.models.wide_resnet import wrn_16_2
from keras_unikd.models.wide_resnet import wrn_40_1
from keras_unikd.models.wide_resnet import wrn_40_2

# Canonical names of the CIFAR-100 KD benchmark models.
CIFAR_MODELS = {
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg13": vgg13,
    "mobilenetv2": mobilenetv2,
    "shufflenetv1": shufflenetv1,
    "shufflenetv2": shufflenetv2,
    "resnet50": resnet50,
}

# Further variants of the same families (no published count is tracked).
EXTRA_MODELS = {
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "wrn_16_1": wrn_16_1,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "vgg19": vgg19,
}

# Names used by RepDistiller / mdistiller configs.
ALIASES = {
    "resnet50_cifar": "resnet50",
    "mobile_half": "mobilenetv2",
    "mobilenet_v2": "mobilenetv2",
    "shufflev1": "shufflenetv1",
    "shufflev2": "shufflenetv2",
    "shufflenet_v1": "shufflenetv1",
    "shufflenet_v2": "shufflenetv2",
}

# Parameter counts as published (in millions, rounded) for num_classes=100.
PUBLISHED_PARAMS = {
    "resnet8x4": 1.23e6,
    "resnet32x4": 7.43e6,
    "resnet20": 0.28e6,
    "resnet56": 0.86e6,
    "resnet110": 1.73e6,
    "wrn_16_2": 0.70e6,
    "wrn_40_1": 0.57e6,
    "wrn_40_2": 2.26e6,
    "vgg8": 3.96e6,
    "vgg13": 9.46e6,
    "mobilenetv2": 0.81e6,
    "shufflenetv1": 0.95e6,
    "shufflenetv2": 1.36e6,
    "resnet50": 23.71e6,
}

# Exact trainable parameter counts (num_classes=100) of these Keras models,
# equal to the PyTorch reference definitions' `sum(p.numel())` (BN running
# statistics are buffers in PyTorch, non-trainable weights here).
EXACT_PARAMS = {
    "resnet8x4": 1233540,
    "resnet32x4": 7433860,
    "resnet20": 278324,
    "resnet56": 861620,
    "resnet110": 1736564,
    "wrn_16_2": 703284,
    "wrn_40_1": 569780,
    "wrn_40_2": 2255156,
    "vgg8": 3965028,
    "vgg13": 9462180,
    "mobilenetv2": 812836,
    "shufflenetv1": 949258,
    "shufflenetv2": 1355528,
    "resnet50": 23705252,
}


def _all_models():
    return {**CIFAR_MODELS, **EXTRA_MODELS}


def known_names():
    return sorted(_all_models())


def get_model(name, /, **kwargs):
    """Builds the zoo model `name` (case-insensitive; RepDistiller aliases work).

    Keyword arguments go to the builder (`num_classes`, `input_shape`, and
    `name`, the Keras model name: the model key itself is positional-only).
    """
    key = str(name).lower().replace("-", "_")
    key = ALIASES.get(key, key)
    models = _all_models()
    if key not in models:
        raise ValueError(
            f"Unknown CIFAR model {name!r}. Known names: {', '.join(known_names())}."
        )
    return models[key](**kwargs)


def feature_tap_names(model):
    """Names of a zoo model's distillation taps, in network order.

    Returns `{"stem": "stem", "stages": ["stage1", ...], "preacts":
    ["stage1_preact", ...], "pool": "pool", "logits": "logits"}`.
    """
    names = {layer.name for layer in model.layers}
    stages = []
    k = 1
    while f"stage{k}" in names:
        stages.append(f"stage{k}")
        k += 1
    return {
        "stem": "stem",
        "stages": stages,
        "preacts": [f"{s}_preact" for s in stages],
        "pool": "pool",
        "logits": "logits",
    }
