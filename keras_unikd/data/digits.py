"""scikit-learn's bundled 8x8 handwritten digits as an `ImageDataset`.

This is the offline fallback used when Fashion-MNIST is not available: it
ships inside scikit-learn, so it needs no download.
"""

import numpy as np

from keras_unikd.data.dataset import ImageDataset


def stratified_split(labels, test_fraction, seed=0):
    """Deterministic per-class train/test split of example indices.

    Within every class the examples are permuted with a fixed seed and the
    first `round(n_class * test_fraction)` go to the test split, so every
    class is represented in both splits in (nearly) the same proportion.

    Args:
        labels: 1-D integer array of labels.
        test_fraction: Fraction of each class placed in the test split,
            strictly between 0 and 1.
        seed: Seed of the permutation.

    Returns:
        A tuple `(train_idx, test_idx)` of sorted `int64` index arrays.

    Raises:
        ValueError: If `test_fraction` is not in `(0, 1)`.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"`test_fraction` must be strictly between 0 and 1; got "
            f"{test_fraction}."
        )
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * float(test_fraction)))
        if len(idx) > 1:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return (
        np.sort(np.concatenate(train_idx)).astype("int64"),
        np.sort(np.concatenate(test_idx)).astype("int64"),
    )


def load_digits_dataset(test_fraction=0.25, seed=0):
    """Loads scikit-learn's 8x8 digits as a uint8 `ImageDataset`.

    The 1,797 images (pixel values 0..16) are rescaled to `uint8` 0..255,
    shaped `(N, 8, 8, 1)`, and split per class with a fixed seed.

    Args:
        test_fraction: Fraction of each class used for the test split.
        seed: Seed of the deterministic split.

    Returns:
        An `ImageDataset` with `name="digits"` and `num_classes=10`.

    Raises:
        ImportError: If scikit-learn is not installed.
        ValueError: If `test_fraction` is not in `(0, 1)`.

    Example:

    >>> ds = load_digits_dataset()
    >>> ds.x_train.shape[1:], ds.x_train.dtype
    ((8, 8, 1), dtype('uint8'))
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "load_digits_dataset() needs scikit-learn, which is not "
            "installed. Install it with `pip install scikit-learn` (or "
            "`pip install keras-unikd[demo]`)."
        ) from e

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype="float64")  # (N, 8, 8), 0..16
    images = np.clip(np.round(images * (255.0 / 16.0)), 0, 255)
    images = images.astype("uint8")[..., None]
    labels = np.asarray(bunch.target, dtype="int32")
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    return ImageDataset(
        name="digits",
        x_train=images[train_idx],
        y_train=labels[train_idx],
        x_test=images[test_idx],
        y_test=labels[test_idx],
        num_classes=10,
        source="sklearn.datasets.load_digits (bundled with scikit-learn)",
    )
