import dataclasses
import sys

import numpy as np
import pytest

from keras_unikd.data import ImageDataset
from keras_unikd.data import load_digits_dataset
from keras_unikd.data import stratified_split


def test_digits_shapes_and_dtypes():
    ds = load_digits_dataset()
    assert isinstance(ds, ImageDataset)
    assert ds.name == "digits"
    assert ds.num_classes == 10
    assert "sklearn" in ds.source
    assert ds.image_shape == (8, 8, 1)
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert len(ds.x_test) == pytest.approx(0.25 * 1797, abs=10)


def test_digits_rescaled_to_full_uint8_range():
    from sklearn.datasets import load_digits

    ds = load_digits_dataset()
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    # Pixel value 16 maps to 255, 8 to round(127.5) = 128.
    raw = load_digits().images
    values = set(np.unique(np.concatenate([ds.x_train, ds.x_test]).ravel()))
    expected = set(np.round(np.unique(raw) * 255.0 / 16.0).astype(int))
    assert values == expected


def test_digits_split_is_stratified_and_disjoint():
    ds = load_digits_dataset(test_fraction=0.2)
    train_counts = np.bincount(ds.y_train, minlength=10)
    test_counts = np.bincount(ds.y_test, minlength=10)
    assert (test_counts > 0).all() and (train_counts > 0).all()
    fractions = test_counts / (train_counts + test_counts)
    np.testing.assert_allclose(fractions, 0.2, atol=0.01)
    # No image/label pair is in both splits more often than in the raw data.
    train_rows = {(x.tobytes(), y) for x, y in zip(ds.x_train, ds.y_train)}
    test_rows = {(x.tobytes(), y) for x, y in zip(ds.x_test, ds.y_test)}
    assert len(train_rows & test_rows) <= 2  # sklearn has a few duplicates


def test_digits_split_is_deterministic():
    a = load_digits_dataset(seed=3)
    b = load_digits_dataset(seed=3)
    c = load_digits_dataset(seed=4)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_invalid_test_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_dataset(test_fraction=fraction)


def test_stratified_split_indices():
    labels = np.repeat(np.arange(3), [10, 20, 2])
    train, test = stratified_split(labels, 0.5, seed=0)
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(32))
    assert np.bincount(labels[test]).tolist() == [5, 10, 1]


def test_missing_sklearn_has_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits_dataset()


def test_image_dataset_validation():
    x = np.zeros((4, 8, 8, 1), "uint8")
    y = np.zeros(4, "int32")
    ds = ImageDataset("toy", x, y, x[:2], y[:2], 2, "memory")
    assert ds.image_shape == (8, 8, 1)
    assert "toy" in repr(ds)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # frozen
    with pytest.raises(ValueError, match=r"x\[\.\.\., None\]"):
        ImageDataset("toy", x[..., 0], y, x, y, 2, "memory")
    with pytest.raises(ValueError, match="y_train has 3"):
        ImageDataset("toy", x, y[:3], x, y, 2, "memory")
    with pytest.raises(ValueError, match="must match"):
        ImageDataset("toy", x, y, np.zeros((4, 4, 4, 1), "uint8"), y, 2, "m")
