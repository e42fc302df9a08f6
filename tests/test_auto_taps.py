import keras
import pytest
from token_models import tiny_text_classifier
from token_models import tiny_vit

from conftest import make_network
from keras_unikd.auto_taps import auto_feature_paths
from keras_unikd.auto_taps import cut_points


def assorted_cnn():
    """Zero padding, a residual block, a shared layer, dropout before the logits."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.ZeroPadding2D(1, name="pad")(inputs)
    x = keras.layers.Conv2D(4, 3, name="stem")(x)
    inner = keras.layers.Conv2D(4, 3, padding="same", name="inner")(x)
    x = keras.layers.Add(name="block_out")([x, inner])
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="down")(x)
    shared = keras.layers.Conv2D(8, 1, name="shared")
    x = keras.layers.ReLU(name="after_shared")(shared(shared(x)))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def nested_classifier(pyramid=False):
    network = make_network(4, "backbone")
    backbone = keras.Model(
        network.input, network.get_layer("backbone_stage3").output, name="backbone"
    )
    if pyramid:  # as keras-hub backbones have
        backbone.pyramid_outputs = {
            "P1": backbone.get_layer("backbone_stage1").output,
            "P2": backbone.get_layer("backbone_stage2").output,
        }
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_cut_points_skip_the_inside_of_blocks():
    cuts, calls = cut_points(assorted_cnn())
    names = [call.operation.name for call in cuts]
    assert names == [
        "pad", "stem", "block_out", "down", "shared", "shared", "after_shared",
        "pool", "drop", "logits",
    ]  # fmt: skip
    assert max(calls.values()) == 2  # the shared layer


def test_stage_ends_and_pooled_vector():
    expected = ["m_stage1", "m_stage2", "m_stage3", "m_pool"]
    assert auto_feature_paths(make_network(4, "m")) == expected
    # Padding enlarges (skipped), "inner" is inside a block, "shared" is called
    # twice, "drop" is noise: none is chosen.
    assert auto_feature_paths(assorted_cnn()) == ["block_out", "after_shared", "pool"]
    assert auto_feature_paths(assorted_cnn(), max_stages=1) == ["after_shared", "pool"]
    sequential = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3),
        ]
    )
    assert auto_feature_paths(sequential) == ["conv", "flat"]


def test_nested_models_and_pyramid_outputs():
    assert auto_feature_paths(nested_classifier()) == [
        "backbone/backbone_stage1",
        "backbone/backbone_stage2",
        "backbone/backbone_stage3",
        "pool",
    ]
    assert auto_feature_paths(nested_classifier(pyramid=True)) == [
        "backbone/backbone_stage1",
        "backbone/backbone_stage2",
        "pool",
    ]


def test_token_models():
    # The patch grid, the tokens and every encoder block share one 4x4 map size.
    assert auto_feature_paths(tiny_vit("vit")) == ["vit_norm", "vit_cls"]
    assert auto_feature_paths(tiny_vit("vit", prefix_tokens=0)) == ["vit_norm", "vit_pool"]
    assert auto_feature_paths(tiny_text_classifier("text")) == ["text_block1_out", "text_pool"]


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="the analysis is symbolic, the same under every backend; JAX compiles each of "
    "the ~600 initializers of these two models (over 70 s on 2 cores)",
)
def test_keras_applications():
    resnet = keras.applications.ResNet50V2(
        weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None
    )
    assert auto_feature_paths(resnet) == [
        "conv2_block2_out", "conv3_block3_out", "conv4_block5_out", "post_relu", "avg_pool",
    ]  # fmt: skip
    mobilenet = keras.applications.MobileNetV2(
        weights=None, input_shape=(96, 96, 3), classes=10, classifier_activation=None
    )
    *stages, pooled = auto_feature_paths(mobilenet)
    assert stages == [
        "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu",
    ]  # fmt: skip
    assert isinstance(mobilenet.get_layer(pooled), keras.layers.GlobalAveragePooling2D)


def test_errors():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="Found no layer of model 'bare' to tap automatically"):
        auto_feature_paths(keras.Model(inputs, keras.layers.Dense(2)(inputs), name="bare"))
    with pytest.raises(ValueError, match="max_stages must be a positive integer"):
        auto_feature_paths(make_network(4, "m"), max_stages=0)
