import keras
import numpy as np
import pytest
from keras import ops

from keras_unikd import MultiStageAggregator
from test_initializers import check_torch_default_uniform

RNG = np.random.default_rng(7)


def features():
    """Stage maps at three resolutions (shallow to deep) and a pooled vector."""
    return [
        RNG.standard_normal((2, 8, 8, 3)).astype("float32"),
        RNG.standard_normal((2, 4, 4, 5)).astype("float32"),
        RNG.standard_normal((2, 2, 2, 6)).astype("float32"),
        RNG.standard_normal((2, 7)).astype("float32"),
    ]


def np_nearest(x, size):
    rows = np.floor(np.arange(size[0]) * x.shape[1] / size[0]).astype(int)
    cols = np.floor(np.arange(size[1]) * x.shape[2] / size[1]).astype(int)
    return x[:, rows][:, :, cols]


def np_conv(x, layer, padding_same=False):
    kernel = ops.convert_to_numpy(layer.kernel)
    size = kernel.shape[0]
    if padding_same and size > 1:
        pad = size // 2
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1] - size + 1, x.shape[2] - size + 1
    out = np.zeros((x.shape[0], height, width, kernel.shape[-1]))
    for i in range(size):
        for j in range(size):
            out += np.einsum("bhwc,cd->bhwd", x[:, i : i + height, j : j + width], kernel[i, j])
    if layer.use_bias:
        out += ops.convert_to_numpy(layer.bias)
    return out


def np_aggregate(layer, inputs, out_size):
    def relu(v):
        return np.maximum(v, 0.0)

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    maps = [x[:, None, None, :] if x.ndim == 2 else x for x in inputs]
    residual = None
    for k in reversed(range(len(maps))):
        h = relu(np_conv(maps[k], layer.projections[k]))
        if residual is not None:
            residual = np_nearest(residual, h.shape[1:3])
            gate = layer.gates[k]
            logits = np.concatenate([h, residual], -1) @ ops.convert_to_numpy(gate.kernel)
            gates = sigmoid(logits + ops.convert_to_numpy(gate.bias))
            h = gates[..., 0:1] * h + gates[..., 1:2] * residual
        residual = h
    return relu(np_conv(np_nearest(residual, out_size), layer.output_conv, padding_same=True))


def test_output_shape_for_mixed_inputs_defaults_and_explicit():
    inputs = features()
    default = MultiStageAggregator()
    assert tuple(default(inputs).shape) == (2, 8, 8, 3)
    explicit = MultiStageAggregator(output_channels=16, output_size=(16, 16))
    assert tuple(explicit(inputs).shape) == (2, 16, 16, 16)
    assert explicit.compute_output_shape([x.shape for x in inputs]) == (2, 16, 16, 16)


def test_mid_width_defaults_to_min_512_deepest_channels():
    layer = MultiStageAggregator()
    layer.build([(None, 8, 8, 3), (None, 1024)])
    assert layer.projections[0].filters == 512
    layer = MultiStageAggregator()
    layer.build([(None, 8, 8, 3), (None, 4, 4, 24)])
    assert layer.projections[0].filters == 24
    layer = MultiStageAggregator(mid_channels=6)
    layer.build([(None, 8, 8, 3), (None, 4, 4, 24)])
    assert layer.projections[1].filters == 6


def test_gated_fusion_matches_numpy_recomputation():
    inputs = features()
    layer = MultiStageAggregator(output_channels=4, output_size=(6, 6), mid_channels=5)
    out = ops.convert_to_numpy(layer(inputs))
    np.testing.assert_allclose(out, np_aggregate(layer, inputs, (6, 6)), rtol=1e-4, atol=1e-5)
    # Gates exist for all but the deepest input; no convolution has a bias.
    assert len(layer.gates) == 3
    assert not any(p.use_bias for p in layer.projections) and not layer.output_conv.use_bias


def test_gated_fusion_with_non_integer_scale_factors_matches_numpy():
    # 3x3 -> 7x7 -> 5x5: nearest resizing repeats some pixels and drops others.
    inputs = [
        RNG.standard_normal((2, 7, 7, 3)).astype("float32"),
        RNG.standard_normal((2, 3, 3, 4)).astype("float32"),
    ]
    layer = MultiStageAggregator(output_channels=2, output_size=(5, 5), mid_channels=4)
    out = ops.convert_to_numpy(layer(inputs))
    np.testing.assert_allclose(out, np_aggregate(layer, inputs, (5, 5)), rtol=1e-4, atol=1e-5)


def test_single_input_is_a_projection_only():
    x = RNG.standard_normal((2, 4, 4, 3)).astype("float32")
    layer = MultiStageAggregator(output_channels=8)
    out = ops.convert_to_numpy(layer([x]))
    assert out.shape == (2, 4, 4, 8)
    assert layer.gates == []
    np.testing.assert_allclose(out, np_aggregate(layer, [x], (4, 4)), rtol=1e-4, atol=1e-5)


def test_kaiming_uniform_bound():
    layer = MultiStageAggregator(mid_channels=64)
    layer.build([(None, 8, 8, 300), (None, 4, 4, 64)])
    kernel = ops.convert_to_numpy(layer.projections[0].kernel)
    bound = np.sqrt(3.0 / 300)
    assert np.abs(kernel).max() <= bound * (1 + 1e-7)  # The bound rounded to float32.
    assert np.abs(kernel).max() > 0.9 * bound


def test_rejects_rank_3_input_with_clear_message():
    with pytest.raises(ValueError, match=r"expected a channels-last map"):
        MultiStageAggregator().build([(None, 8, 8, 3), (None, 16, 4)])


def test_get_config_round_trip_and_gradients_flow():
    layer = MultiStageAggregator(output_channels=4, output_size=(8, 8), mid_channels=5, name="agg")
    inputs = features()
    layer(inputs)
    clone = MultiStageAggregator.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "keras_unikd>MultiStageAggregator"
    # Every weight of the layer takes part in the output.
    assert len(layer.trainable_weights) == 4 + 3 * 2 + 1


def test_gate_has_pytorch_default_init_and_convolutions_stay_kaiming():
    # The gate is the reference's nn.Conv2d(2M, 2, 1): weight and bias in +-1/sqrt(2M).
    mid = 2048
    layer = MultiStageAggregator(output_channels=1, mid_channels=mid)
    layer.build([(None, 4, 4, 3), (None, 2, 2, 5)])
    gate = layer.gates[0]
    check_torch_default_uniform(ops.convert_to_numpy(gate.kernel), 2 * mid)
    bias = ops.convert_to_numpy(gate.bias)
    assert np.all(bias != 0) and np.abs(bias).max() <= (1 + 1e-7) / np.sqrt(2 * mid)
    small = MultiStageAggregator(mid_channels=2)
    small.build([(None, 4, 4, 3), (None, 2, 2, 5)])
    bias = ops.convert_to_numpy(small.gates[0].bias)
    assert np.all(bias != 0) and np.abs(bias).max() <= 0.5
    # The 3x3 output convolution: Kaiming-uniform a=1, bound sqrt(3 / (9 * mid)).
    kernel = ops.convert_to_numpy(layer.output_conv.kernel)
    bound = np.sqrt(3.0 / (9 * mid))
    assert bound * 0.98 < np.abs(kernel).max() <= bound * (1 + 1e-7)
