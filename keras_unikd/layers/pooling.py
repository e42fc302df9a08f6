"""Spatial poolings: the `"pooled"` reduction of a feature (its spatial mean),
and PyTorch's adaptive average pooling."""

import numpy as np
from keras import ops


def global_pool(feature):
    """A channels-last `(batch, H, W, C)` map averaged over H and W; a vector as is.

    What `DistributionHead` does first, and what a term that reads a teacher
    feature only through this mean declares (`TeacherNeeds.pooled_features`):
    a teacher-output cache then stores the `(batch, C)` vector, and the
    online teacher source hands the term that vector too.

    Example:

    >>> import numpy as np
    >>> tuple(global_pool(np.ones((2, 4, 4, 3), "float32")).shape)
    (2, 3)
    >>> tuple(global_pool(np.ones((2, 3), "float32")).shape)
    (2, 3)
    """
    return ops.mean(feature, axis=(1, 2)) if len(feature.shape) == 4 else feature


def adaptive_pool_matrix(in_size, out_size):
    """`(out_size, in_size)` float32 weights of PyTorch's adaptive average pooling.

    Bin `i` averages the inputs `floor(i * in / out)` to
    `ceil((i + 1) * in / out) - 1`, as `F.adaptive_avg_pool2d` does along
    each axis: plain windows when the sizes divide, overlapping (or
    repeated, when enlarging) bins otherwise.

    Example:

    >>> adaptive_pool_matrix(3, 2).tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]
    """
    weights = np.zeros((out_size, in_size), "float32")
    for index in range(out_size):
        start = index * in_size // out_size
        stop = -(-(index + 1) * in_size // out_size)
        weights[index, start:stop] = 1.0 / (stop - start)
    return weights


def adaptive_average_pool(maps, size):
    """PyTorch's `F.adaptive_avg_pool2d(x, size)` on channels-last `(batch, H, W, C)` maps.

    Exact for every pair of sizes (`adaptive_pool_matrix` along each axis),
    where a strided average pooling only matches when the sizes divide.

    Example:

    >>> x = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    >>> ops.convert_to_numpy(adaptive_average_pool(x, (2, 2)))[0, ..., 0].tolist()
    [[2.0, 3.0], [5.0, 6.0]]
    """
    rows = adaptive_pool_matrix(maps.shape[1], size[0])
    cols = adaptive_pool_matrix(maps.shape[2], size[1])
    pooled = ops.einsum("ih,bhwc->biwc", ops.cast(rows, maps.dtype), maps)
    return ops.einsum("jw,biwc->bijc", ops.cast(cols, maps.dtype), pooled)
