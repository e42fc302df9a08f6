import numpy as np
import pytest
from keras import ops

from keras_unikd.layers.resize import resize_nearest
from test_losses import gradient


def np_nearest_indices(in_size, out_size):
    # PyTorch's F.interpolate(mode="nearest"): source floor(i * in / out).
    return np.minimum(np.floor(np.arange(out_size) * in_size / out_size), in_size - 1).astype(int)


# (input size, output size) per axis: equal, integer up-sampling (a repeat),
# a 1x1 map (a broadcast), integer down-sampling (a strided slice), and
# non-integer factors both ways (a gather).
SIZES = [
    ((4, 4), (4, 4)),
    ((2, 3), (8, 6)),
    ((1, 1), (5, 3)),
    ((8, 6), (2, 3)),
    ((3, 7), (7, 5)),
    ((4, 8), (8, 2)),
]


@pytest.mark.parametrize("in_size, out_size", SIZES)
def test_values_and_gradient_match_numpy(in_size, out_size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *in_size, 3)).astype("float32")
    rows = np_nearest_indices(in_size[0], out_size[0])
    cols = np_nearest_indices(in_size[1], out_size[1])
    expected = x[:, rows][:, :, cols]
    actual = ops.convert_to_numpy(resize_nearest(x, out_size))
    np.testing.assert_array_equal(actual, expected)

    # d/dx sum(w * resize(x)): each input pixel gathers the weights of its copies.
    w = rng.standard_normal(expected.shape).astype("float32")
    expected_gradient = np.zeros_like(x)
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            expected_gradient[:, row, col] += w[:, i, j]
    actual_gradient = gradient(
        lambda v: ops.sum(resize_nearest(v, out_size) * ops.convert_to_tensor(w)), x
    )
    np.testing.assert_allclose(actual_gradient, expected_gradient, rtol=1e-6, atol=1e-6)
