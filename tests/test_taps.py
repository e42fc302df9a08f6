import keras
import numpy as np
import pytest
from keras import ops
from token_models import tiny_text_classifier
from token_models import tiny_vit

from conftest import make_network
from keras_unikd import FeatureTap


def nested_classifier():
    """A classifier whose backbone is a nested functional model."""
    backbone = make_network(4, "backbone")
    backbone = keras.Model(
        backbone.input, backbone.get_layer("backbone_stage3").output, name="backbone"
    )
    inputs = keras.Input((12, 12, 1))
    x = backbone(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="classifier")


def test_tap_returns_logits_and_features_of_one_forward():
    model = make_network(4, "m")
    tap = FeatureTap(model, ["m_stage1", "m_stage3", "m_pool"])
    assert tap.feature_shapes == [(None, 12, 12, 4), (None, 3, 3, 16), (None, 16)]
    x = np.random.default_rng(0).random((2, 12, 12, 1), dtype=np.float32)
    logits, features = tap(x)
    np.testing.assert_allclose(
        ops.convert_to_numpy(logits), ops.convert_to_numpy(model(x)), rtol=1e-6
    )
    reference = keras.Model(model.input, model.get_layer("m_stage3").output)
    np.testing.assert_allclose(
        ops.convert_to_numpy(features[1]), ops.convert_to_numpy(reference(x)), rtol=1e-6
    )
    # The tap reuses the model's layers and weights: no copies.
    assert {id(w) for w in tap.tap_model.weights} == {id(w) for w in model.weights}


def test_paths_reach_inside_nested_models():
    model = nested_classifier()
    tap = FeatureTap(model, ["backbone/backbone_stage1", "pool"])
    assert tap.feature_shapes == [(None, 12, 12, 4), (None, 16)]
    x = np.ones((2, 12, 12, 1), "float32")
    logits, (stage1, _) = tap(x)
    np.testing.assert_allclose(
        ops.convert_to_numpy(logits), ops.convert_to_numpy(model(x)), rtol=1e-6
    )
    backbone = model.get_layer("backbone")
    reference = keras.Model(backbone.input, backbone.get_layer("backbone_stage1").output)
    np.testing.assert_allclose(
        ops.convert_to_numpy(stage1), ops.convert_to_numpy(reference(x)), rtol=1e-6
    )


def test_sequential_models_can_be_tapped():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )
    tap = FeatureTap(model, ["conv"])
    x = np.ones((1, 6, 6, 2), "float32")
    logits, (conv,) = tap(x)
    assert tuple(conv.shape) == (1, 4, 4, 3)
    np.testing.assert_allclose(
        ops.convert_to_numpy(logits), ops.convert_to_numpy(model(x)), rtol=1e-6
    )


def test_unknown_name_lists_available_layers():
    with pytest.raises(
        ValueError, match=r"No layer named 'm_stage9'.*Available layers: \['input_layer.*'m_stage1'"
    ):
        FeatureTap(make_network(4, "m"), ["m_stage9"])
    with pytest.raises(ValueError, match=r"nested models here: \['backbone'\]"):
        FeatureTap(nested_classifier(), ["stage1"])
    with pytest.raises(ValueError, match=r"from path 'backbone/nope'.*'backbone_stage1'"):
        FeatureTap(nested_classifier(), ["backbone/nope"])
    with pytest.raises(ValueError, match="not a nested model"):
        FeatureTap(nested_classifier(), ["pool/inner"])


def test_layer_off_the_logits_path_is_rejected():
    # A branch built on the model's graph but not feeding its logits is not
    # part of the model, so it cannot be tapped from one forward pass.
    model = make_network(4, "m")
    keras.layers.Dense(2, name="side_head")(model.get_layer("m_pool").output)
    with pytest.raises(ValueError, match="No layer named 'side_head'"):
        FeatureTap(model, ["side_head"])


def test_layer_called_twice_is_ambiguous():
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    outputs = keras.layers.Dense(2)(shared(shared(inputs)))
    with pytest.raises(ValueError, match="called more than once"):
        FeatureTap(keras.Model(inputs, outputs), ["shared"])


def test_subclassed_and_multi_output_models_are_rejected():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed model"):
        FeatureTap(net, ["dense"])
    inputs = keras.Input((3,))
    two = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)])
    with pytest.raises(ValueError, match="has 2 outputs"):
        FeatureTap(two, [])
    with pytest.raises(TypeError, match="Expected a keras.Model"):
        FeatureTap(keras.layers.Dense(2), [])


def test_token_features_come_out_as_maps():
    model = tiny_vit("vit")
    tap = FeatureTap(model, ["vit_block1_out", "vit_cls"])
    assert tap.feature_shapes == [(None, 4, 4, 8), (None, 8)]
    assert tap.token_report == [
        "'vit_block1_out' (None, 17, 8): 1 prefix token set aside, 4x4 grid -> (None, 4, 4, 8)"
    ]
    x = np.random.default_rng(0).random((2, 12, 12, 1), dtype=np.float32)
    _, (grid, _) = tap(x)
    tokens = keras.Model(model.input, model.get_layer("vit_block1_out").output)(x)
    expected = ops.convert_to_numpy(tokens)[:, 1:].reshape(2, 4, 4, 8)
    np.testing.assert_array_equal(ops.convert_to_numpy(grid), expected)


def test_text_tokens_are_a_sequence():
    tap = FeatureTap(tiny_text_classifier("text"), ["text_embedding"])
    assert tap.feature_shapes == [(None, 10, 1, 8)]
    _, (sequence,) = tap(np.arange(20, dtype="int32").reshape(2, 10))
    assert tuple(sequence.shape) == (2, 10, 1, 8)


def test_token_layouts_override_the_rule():
    model = tiny_vit("vit")
    tap = FeatureTap(
        model,
        ["vit_block1_out", "vit_norm"],
        token_layouts={"vit_block1_out": "sequence", "vit_norm": [5, 3, 4]},
    )
    assert tap.feature_shapes == [(None, 17, 1, 8), (None, 3, 4, 8)]
    assert tap.token_report == []  # overrides are the user's: nothing to report
    with pytest.raises(ValueError, match=r"does not tap \(tapped: \['vit_norm'\]\)"):
        FeatureTap(model, ["vit_norm"], token_layouts={"vit_cls": "grid"})
    with pytest.raises(ValueError, match=r"'vit_cls', but it outputs shape \(None, 8\)"):
        FeatureTap(model, ["vit_cls"], token_layouts={"vit_cls": "grid"})


def test_tokens_that_fit_no_grid_name_the_tap_and_the_fix():
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Dense(90 * 8)(keras.layers.Flatten()(inputs))
    tokens = keras.layers.Reshape((90, 8), name="odd_tokens")(x)
    pooled = keras.layers.GlobalAveragePooling1D()(tokens)
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    with pytest.raises(
        ValueError,
        match=r"'odd_tokens' outputs tokens of shape \(None, 90, 8\).*"
        r"token_layouts=\{'odd_tokens': 'sequence'\}",
    ):
        FeatureTap(model, ["odd_tokens"])
    tap = FeatureTap(model, ["odd_tokens"], token_layouts={"odd_tokens": (9, 9, 9)})
    assert tap.feature_shapes == [(None, 9, 9, 8)]
