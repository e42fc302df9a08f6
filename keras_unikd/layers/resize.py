"""Nearest-neighbour resizing with PyTorch's `F.interpolate(mode="nearest")` indexing."""

import numpy as np
from keras import ops


def nearest_indices(in_size, out_size):
    """Source index of every output position: `floor(i * in / out)`."""
    scale = in_size / out_size
    indices = np.floor(np.arange(out_size) * scale).astype("int32")
    return np.minimum(indices, in_size - 1)


def _resize_axis(images, out_size, axis):
    in_size = images.shape[axis]
    if in_size == out_size:
        return images
    indices = nearest_indices(in_size, out_size)
    # Integer factors as a repeat or a strided slice: the same pixels as the
    # gather below, but their gradients are a sum over copies and a scatter
    # into a strided slice, where a gather's is a segment sum over the whole
    # map (slower to trace and to run).
    positions = np.arange(out_size)
    if out_size % in_size == 0:
        factor = out_size // in_size
        if np.array_equal(indices, positions // factor):
            return ops.repeat(images, factor, axis=axis)
    elif in_size % out_size == 0:
        step = in_size // out_size
        if np.array_equal(indices, positions * step):
            return images[:, ::step] if axis == 1 else images[:, :, ::step]
    return ops.take(images, indices, axis=axis)


def resize_nearest(images, size):
    """Resizes channels-last `(batch, H, W, C)` maps to `size = (H', W')`.

    Output pixel `(i, j)` is input pixel `(floor(i * H / H'), floor(j * W / W'))`.
    Integer up-sampling repeats pixels (a 1x1 map broadcasts to any size),
    integer down-sampling keeps every k-th pixel, and other factors gather.
    """
    images = _resize_axis(images, size[0], axis=1)
    return _resize_axis(images, size[1], axis=2)
