"""Batches that carry each example's row in the training set.

Terms that keep a memory row per training example (contrastive
representation distillation, `keras_unikd.terms.crd`) read each example's
index, its row in the training arrays. A batch carries it in its inputs,
the way a teacher-output cache's batches carry the teacher's outputs
(`keras_unikd.teacher_source`):

    ({"inputs": x, "example_index": index}, labels)

with `x` the batch's inputs (or `(weak, strong)` views) and `index` int32
`(batch,)`; from a cache, `({"inputs": x, "cached_teacher": outputs,
"example_index": index}, labels)`. The keyed and plain pipelines
(`make_keyed_image_pipeline`, `make_image_pipeline`, `cifar100_datasets`,
`keras_unikd.cache.cached_teacher_pipeline`) emit it with
`with_example_index=True`; `with_example_index` adds it to arrays or an
unbatched `tf.data.Dataset`.
"""

import numpy as np

from keras_unikd.teacher_source import EXAMPLE_INDEX
from keras_unikd.teacher_source import INPUTS


def indexed(x, index):
    """`{"inputs": x, "example_index": index}`: a batch's inputs with its indices."""
    return {INPUTS: x, EXAMPLE_INDEX: index}


def with_example_index(x, y=None):
    """Adds each example's row (its index in the training set) to training data.

    Arrays: `x` (an array shaped `(N, ...)`, or a dict / list of them for a
    multi-input model) and `y` become `({"inputs": x, "example_index":
    np.arange(N)}, y)`, to unpack into `fit`:
    `distiller.fit(*with_example_index(x, y), batch_size=64, ...)` (Keras
    slices, and shuffles, every array alike).

    A `tf.data.Dataset` of single examples `(x, y)` (or `(x, y,
    sample_weight)`) becomes one of `({"inputs": x, "example_index": i},
    y)`, `i` the int32 position of the example in the dataset. Apply it to
    the unbatched, unshuffled training set, before `shuffle`, augmentation
    and `batch`: positions in a batched or shuffled dataset are not rows.

    Args:
        x: The training inputs (arrays), or a `tf.data.Dataset` of examples.
        y: The labels of array inputs; `None` with a dataset.

    Returns:
        `(inputs with indices, y)` for arrays, a `tf.data.Dataset` for a
        dataset.

    Raises:
        ValueError: for arrays of different lengths, or `y` with a dataset.

    Example:

    >>> x, y = np.zeros((5, 4, 4, 1), "float32"), np.arange(5) % 2
    >>> inputs, labels = with_example_index(x, y)
    >>> sorted(inputs), inputs["example_index"].tolist()
    (['example_index', 'inputs'], [0, 1, 2, 3, 4])
    """
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                "with_example_index: give a dataset of (x, y) examples alone, without y; "
                f"got y={type(y).__name__}."
            )
        return x.enumerate().map(_indexed_example)
    lengths = {len(leaf) for leaf in _leaves(x) + _leaves(y)}
    if len(lengths) != 1:
        raise ValueError(
            "with_example_index: x and y must be arrays of the same length (one row per "
            f"example); got lengths {sorted(lengths)}."
        )
    return indexed(x, np.arange(lengths.pop(), dtype="int32")), y


def _leaves(value):
    if value is None:
        return []
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [np.asarray(value) if not hasattr(value, "shape") else value]


def _indexed_example(position, example):
    import tensorflow as tf

    if not isinstance(example, tuple) or len(example) not in (2, 3):
        raise ValueError(
            "with_example_index: the dataset's elements must be (x, y) or (x, y, "
            f"sample_weight) examples; got {example!r}."
        )
    x, *rest = example
    return (indexed(x, tf.cast(position, tf.int32)), *rest)
