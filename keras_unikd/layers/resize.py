"""Nearest-neighbour resizing with PyTorch's `F.interpolate(mode="nearest")` indexing."""

import numpy as np
from keras import ops


def nearest_indices(in_size, out_size):
    """Source index of every output position: `floor(i * in / out)`."""
    scale = in_size / out_size
    indices = np.floor(np.arange(out_size) * scale).astype("int32")
    return np.minimum(indices, in_size - 1)


def resize_nearest(images, size):
    """Resizes channels-last `(batch, H, W, C)` maps to `size = (H', W')`.

    A static gather along the two spatial axes: exact integer up-sampling
    repeats pixels, and a 1x1 map broadcasts to any size.
    """
    height, width = images.shape[1], images.shape[2]
    out_height, out_width = size
    if height != out_height:
        images = ops.take(images, nearest_indices(height, out_height), axis=1)
    if width != out_width:
        images = ops.take(images, nearest_indices(width, out_width), axis=2)
    return images
