"""The `"pooled"` reduction of a feature: its mean over the spatial axes."""

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
