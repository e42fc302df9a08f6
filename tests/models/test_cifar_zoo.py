"""CIFAR-100 KD model zoo: architecture, parameter counts and distillation taps."""

import math

import keras
import numpy as np
import pytest

from keras_unikd.models import layers_util
from keras_unikd.models.layers_util import ChannelShuffle
from keras_unikd.models.layers_util import ChannelSplit
from keras_unikd.models.registry import CIFAR_MODELS
from keras_unikd.models.registry import EXACT_PARAMS
from keras_unikd.models.registry import PUBLISHED_PARAMS
from keras_unikd.models.registry import feature_tap_names
from keras_unikd.models.registry import get_model

# Expected output shapes (without batch) of the named tap layers.
EXPECTED_SHAPES = {
    "resnet8x4": {
        "stem": (32, 32, 32), "stage1": (32, 32, 64), "stage2": (16, 16, 128),
        "stage3": (8, 8, 256), "pool": (256,),
    },
    "resnet32x4": {
        "stem": (32, 32, 32), "stage1": (32, 32, 64), "stage2": (16, 16, 128),
        "stage3": (8, 8, 256), "pool": (256,),
    },
    "resnet20": {
        "stem": (32, 32, 16), "stage1": (32, 32, 16), "stage2": (16, 16, 32),
        "stage3": (8, 8, 64), "pool": (64,),
    },
    "resnet56": {
        "stem": (32, 32, 16), "stage1": (32, 32, 16), "stage2": (16, 16, 32),
        "stage3": (8, 8, 64), "pool": (64,),
    },
    "resnet110": {
        "stem": (32, 32, 16), "stage1": (32, 32, 16), "stage2": (16, 16, 32),
        "stage3": (8, 8, 64), "pool": (64,),
    },
    "wrn_16_2": {
        "stem": (32, 32, 16), "stage1": (32, 32, 32), "stage2": (16, 16, 64),
        "stage3": (8, 8, 128), "pool": (128,),
    },
    "wrn_40_1": {
        "stem": (32, 32, 16), "stage1": (32, 32, 16), "stage2": (16, 16, 32),
        "stage3": (8, 8, 64), "pool": (64,),
    },
    "wrn_40_2": {
        "stem": (32, 32, 16), "stage1": (32, 32, 32), "stage2": (16, 16, 64),
        "stage3": (8, 8, 128), "pool": (128,),
    },
    "vgg8": {
        "stem": (32, 32, 64), "stage1": (16, 16, 128), "stage2": (8, 8, 256),
        "stage3": (4, 4, 512), "stage4": (4, 4, 512), "pool": (512,),
    },
    "vgg13": {
        "stem": (32, 32, 64), "stage1": (16, 16, 128), "stage2": (8, 8, 256),
        "stage3": (4, 4, 512), "stage4": (4, 4, 512), "pool": (512,),
    },
    "mobilenetv2": {
        "stem": (16, 16, 16), "stage1": (16, 16, 12), "stage2": (8, 8, 16),
        "stage3": (4, 4, 48), "stage4": (2, 2, 160), "pool": (1280,),
    },
    "shufflenetv1": {
        "stem": (32, 32, 24), "stage1": (16, 16, 240), "stage2": (8, 8, 480),
        "stage3": (4, 4, 960), "pool": (960,),
    },
    "shufflenetv2": {
        "stem": (32, 32, 24), "stage1": (16, 16, 116), "stage2": (8, 8, 232),
        "stage3": (4, 4, 464), "pool": (1024,),
    },
    "resnet50": {
        "stem": (32, 32, 64), "stage1": (32, 32, 256), "stage2": (16, 16, 512),
        "stage3": (8, 8, 1024), "stage4": (4, 4, 2048), "pool": (2048,),
    },
}


def trainable_count(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def constant_init():
    """Structure-only builds: constant initializers skip the per-shape random
    kernels (compiled once per weight shape on JAX, which dominates build time)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layers_util, "conv_initializer", lambda: "zeros")
        patch.setattr(layers_util, "dense_initializer", lambda: "zeros")
        yield


def test_registry_covers_the_zoo():
    assert set(CIFAR_MODELS) == set(PUBLISHED_PARAMS) == set(EXACT_PARAMS) == set(EXPECTED_SHAPES)


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_model_architecture(name, constant_init):
    model = get_model(name)
    assert isinstance(model, keras.Model)
    assert model.name == name

    count = trainable_count(model)
    assert count == EXACT_PARAMS[name]
    published = PUBLISHED_PARAMS[name]
    assert abs(count - published) / published < 0.01, (count, published)

    expected = EXPECTED_SHAPES[name]
    for layer_name, shape in expected.items():
        assert tuple(model.get_layer(layer_name).output.shape) == (None, *shape), layer_name
    stages = [k for k in expected if k.startswith("stage")]
    taps = feature_tap_names(model)
    assert taps["stages"] == stages
    assert taps["preacts"] == [f"{s}_preact" for s in stages]
    for stage in stages:
        preact = model.get_layer(f"{stage}_preact").output
        assert tuple(preact.shape) == (None, *expected[stage]), stage
    assert tuple(model.get_layer("logits").output.shape) == (None, 100)
    assert tuple(model.output.shape) == (None, 100)


@pytest.mark.parametrize("name", ["resnet8x4", "shufflenetv2"])
def test_forward_and_taps(name):
    model = get_model(name, num_classes=10)
    taps = ["stem", "stage1", "stage1_preact", "stage3", "stage3_preact", "pool", "logits"]
    extractor = keras.Model(model.input, [model.get_layer(t).output for t in taps])
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    outs = dict(zip(taps, extractor(x, training=False)))
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (2, 10)
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(outs["logits"]), logits, rtol=1e-5, atol=1e-5
    )
    stage3 = keras.ops.convert_to_numpy(outs["stage3"])
    preact3 = keras.ops.convert_to_numpy(outs["stage3_preact"])
    assert stage3.min() >= 0.0
    if name == "resnet8x4":
        np.testing.assert_allclose(stage3, np.maximum(preact3, 0.0), atol=1e-6)
        # The reference pools the last stage's post-ReLU map.
        pooled = keras.ops.convert_to_numpy(outs["pool"])
        np.testing.assert_allclose(pooled, stage3.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_channel_shuffle_matches_torch_permutation():
    n, h, w, c, g = 2, 3, 3, 12, 3
    x = np.arange(n * h * w * c, dtype="float32").reshape(n, h, w, c)
    out = keras.ops.convert_to_numpy(ChannelShuffle(g)(x))
    # PyTorch: [N, g, C/g, H, W] -> permute(0, 2, 1, 3, 4) -> [N, C, H, W].
    nchw = x.transpose(0, 3, 1, 2)
    ref = nchw.reshape(n, g, c // g, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)
    np.testing.assert_array_equal(out, ref.transpose(0, 2, 3, 1))


def test_channel_split():
    x = np.arange(2 * 2 * 2 * 6, dtype="float32").reshape(2, 2, 2, 6)
    first, second = ChannelSplit(0.5)(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(first), x[..., :3])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(second), x[..., 3:])


def test_config_round_trip_with_custom_layers(constant_init):
    model = get_model("shufflenetv2", num_classes=10)
    clone = keras.Model.from_config(model.get_config())
    assert trainable_count(clone) == trainable_count(model)
    assert clone.get_layer("stage2").__class__ is ChannelShuffle


def test_get_model_aliases_and_kwargs(constant_init):
    model = get_model("ShuffleV1", num_classes=10, name="student")
    assert model.name == "student"
    assert tuple(model.output.shape) == (None, 10)


def test_get_model_unknown_name():
    with pytest.raises(ValueError, match="resnet32x4"):
        get_model("resnet9000")
