"""Tests for the CIFAR-100 TFDS pipelines (mocked TFDS, no download)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_unikd.data import augment as aug
from keras_unikd.data import cifar100_datasets
from keras_unikd.data import cifar100_strong_view
from keras_unikd.data.cifar100 import CIFAR100_CUTOUT_FILL
from keras_unikd.data.cifar100 import CIFAR100_MEAN
from keras_unikd.data.cifar100 import CIFAR100_STD
from keras_unikd.data.cifar100 import cifar100_normalize
from keras_unikd.data.cifar100 import cifar100_train_map
from keras_unikd.data.cifar100 import cifar100_weak_view

MEAN = np.array(CIFAR100_MEAN, "float32")
STD = np.array(CIFAR100_STD, "float32")
LOW = (0.0 - MEAN) / STD  # Normalised value of a 0 pixel, per channel.
HIGH = (1.0 - MEAN) / STD  # Normalised value of a 255 pixel.


def fixed_examples(images, labels):
    """A `mock_data(as_dataset_fn=...)` serving the given examples."""

    def as_dataset(self, split=None, decoders=None, read_config=None, **kw):
        return tf.data.Dataset.from_tensor_slices(
            {"image": np.asarray(images, "uint8"), "label": np.asarray(labels)}
        )

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def test_shapes_dtypes_and_take():
    with tfds.testing.mock_data(num_examples=10):
        train, test = cifar100_datasets(batch_size=4, take=6, eval_batch_size=5)
        train_b, test_b = batches(train), batches(test)
    spec = (
        tf.TensorSpec((None, 32, 32, 3), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    )
    assert train.element_spec == spec
    assert test.element_spec == spec
    # Unseeded training pipelines emit batches in a non-deterministic order.
    assert sorted(len(y) for _, y in train_b) == [2, 4]
    assert [len(y) for _, y in test_b] == [5, 1]
    for x, y in train_b + test_b:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert np.all((y >= 0) & (y < 100))
        # Normalised pixels lie between the values of 0 and 255 pixels.
        assert np.all(x >= LOW - 1e-5) and np.all(x <= HIGH + 1e-5)


def test_without_take_uses_every_example_and_drop_remainder():
    with tfds.testing.mock_data(num_examples=7):
        train, test = cifar100_datasets(batch_size=3, drop_remainder=True)
        assert [len(y) for _, y in batches(train)] == [3, 3]
        assert [len(y) for _, y in batches(test)] == [3, 3, 1]
    assert train.element_spec[0].shape.as_list() == [3, 32, 32, 3]


def test_test_pipeline_is_the_documented_normalisation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5])
    with fixed_examples(images, labels):
        _, test = cifar100_datasets(batch_size=2)
        xs, ys = zip(*batches(test))
    expected = (images / 255.0 - CIFAR100_MEAN) / CIFAR100_STD
    np.testing.assert_allclose(np.concatenate(xs), expected, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate(ys), labels)  # In order.


def test_normalize_known_values():
    image = np.zeros((2, 2, 3), "uint8")
    image[..., 1] = 255
    image[..., 2] = 51
    out = cifar100_normalize(image).numpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], -0.5071 / 0.2673, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], (1 - 0.4865) / 0.2564, rtol=1e-6)
    np.testing.assert_allclose(out[..., 2], (0.2 - 0.4409) / 0.2762, rtol=1e-5)


def test_padded_crop_zeros_only_in_borders_at_most_4_wide():
    ones = tf.ones((32, 32, 3), tf.uint8)
    shifts = set()
    for i in range(40):
        out = aug.pad_and_random_crop(ones, 4, tf.constant([i, 7])).numpy()
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        rows = np.flatnonzero(out[:, :, 0].any(axis=1))
        cols = np.flatnonzero(out[:, :, 0].any(axis=0))
        top, bottom = rows[0], 31 - rows[-1]
        left, right = cols[0], 31 - cols[-1]
        # The ones form one rectangle; zeros fill the rest, on at most one
        # side per axis and at most 4 pixels wide.
        assert out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
        assert out.sum() == len(rows) * len(cols) * 3
        assert max(top, bottom, left, right) <= 4
        assert min(top, bottom) == 0 and min(left, right) == 0
        shifts.add((top - bottom, left - right))
    assert len(shifts) > 10  # The crop really moves.


def test_train_pipeline_crop_padding_on_white_images():
    images = np.full((6, 32, 32, 3), 255, "uint8")
    with fixed_examples(images, np.arange(6)):
        train, _ = cifar100_datasets(batch_size=6, shuffle_seed=0)
        (x, y), = batches(train)
    assert sorted(y.tolist()) == list(range(6))
    is_zero = np.isclose(x, LOW, atol=1e-5).all(axis=-1)
    is_white = np.isclose(x, HIGH, atol=1e-5).all(axis=-1)
    assert np.all(is_zero | is_white)
    # Zero (padding) pixels only within 4 pixels of the border.
    assert not is_zero[:, 4:28, 4:28].any()
    assert is_zero.any()  # Some crop was shifted (6 images, seed 0).


def test_flip_is_a_real_flip():
    image = tf.reshape(tf.range(4 * 5 * 3, dtype=tf.int32), (4, 5, 3))
    flipped = image.numpy()[:, ::-1]
    seen = set()
    for i in range(20):
        out = aug.random_flip(image, tf.constant([i, 1])).numpy()
        if np.array_equal(out, flipped):
            seen.add("flipped")
        else:
            np.testing.assert_array_equal(out, image.numpy())
            seen.add("same")
    assert seen == {"flipped", "same"}


def test_train_map_keeps_shapes_and_casts_labels():
    image = tf.constant(
        np.random.default_rng(0).integers(0, 256, (32, 32, 3)), tf.uint8
    )
    example = (image, tf.constant(7, tf.int64))
    out, label = cifar100_train_map()(example, tf.constant([1, 2]))
    assert out.shape == (32, 32, 3) and out.dtype == tf.uint8
    assert label.dtype == tf.int32 and int(label) == 7


def test_seeded_pipeline_is_reproducible_and_reshuffles_each_epoch():
    with tfds.testing.mock_data(num_examples=12):
        first, _ = cifar100_datasets(batch_size=12, shuffle_seed=5)
        second, _ = cifar100_datasets(batch_size=12, shuffle_seed=5)
        (x1, y1), (x2, y2) = batches(first)[0], batches(second)[0]
        (x3, y3), = batches(first)  # Second epoch of `first`.
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)


def test_two_views_structure_shapes_and_range():
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), "uint8")
    images[:] = images[0]  # One image, so views differ only by augmentation.
    with fixed_examples(images, np.arange(8)):
        train, test = cifar100_datasets(batch_size=4, two_views=True)
        out = batches(train)
        test_spec = test.element_spec
    view = tf.TensorSpec((None, 32, 32, 3), tf.float32)
    label = tf.TensorSpec((None,), tf.int32)
    assert train.element_spec == ((view, view), label)
    assert test_spec == (view, label)  # Evaluation stays single view.
    assert len(out) == 2
    for (weak, strong), y in out:
        assert weak.shape == strong.shape == (4, 32, 32, 3)
        assert weak.dtype == strong.dtype == np.float32 and y.dtype == np.int32
        for v in (weak, strong):
            assert np.all(v >= LOW - 1e-4) and np.all(v <= HIGH + 1e-4)
    strong = np.concatenate([s for (_, s), _ in out])
    weak = np.concatenate([w for (w, _), _ in out])
    # Every example gets its own strong transform.
    assert len({s.tobytes() for s in strong}) == 8
    assert not np.allclose(strong, weak)


def test_two_views_weak_view_is_the_single_view_pipeline():
    images = np.random.default_rng(2).integers(0, 256, (10, 32, 32, 3), "uint8")
    with fixed_examples(images, np.arange(10)):
        single, _ = cifar100_datasets(batch_size=4, shuffle_seed=11)
        double, _ = cifar100_datasets(batch_size=4, shuffle_seed=11, two_views=True)
        old_flag, _ = cifar100_datasets(batch_size=4, shuffle_seed=11, strong_augment=True)
        single_b, double_b = batches(single), batches(double)
        old_b, epoch2 = batches(old_flag), batches(double)
    assert [len(y) for _, y in double_b] == [4, 4, 2]
    for (x, y), ((weak, strong), y2) in zip(single_b, double_b):
        np.testing.assert_array_equal(weak, x)
        np.testing.assert_array_equal(y2, y)
        assert not np.allclose(strong, weak)
    # Seeded: the same batches, strong views included, from a new pipeline
    # (built with the older `strong_augment=True`); new draws next epoch.
    for b1, b2 in zip(double_b, old_b):
        tf.nest.map_structure(np.testing.assert_array_equal, b1, b2)
    first = np.concatenate([s for (_, s), _ in double_b])
    second = np.concatenate([s for (_, s), _ in epoch2])
    assert not np.array_equal(first, second)


def test_strong_view_has_one_cutout_square_of_the_mean_colour():
    images = np.full((12, 32, 32, 3), 255, "uint8")
    with fixed_examples(images, np.arange(12)):
        train, _ = cifar100_datasets(batch_size=12, shuffle_seed=0, two_views=True)
        ((weak, strong), _), = batches(train)
    # The fill is the mean colour, which normalises to 0; RandAugment only
    # produces integer pixels, none of which normalises to 0 in every
    # channel.
    assert not np.isclose(weak, 0.0, atol=1e-3).all(axis=-1).any()
    sides = []
    for view in strong:
        filled = np.isclose(view, 0.0, atol=1e-4).all(axis=-1)
        rows = np.flatnonzero(filled.any(axis=1))
        cols = np.flatnonzero(filled.any(axis=0))
        assert 1 <= rows.size <= 16 and 1 <= cols.size <= 16
        # One solid rectangle.
        assert filled.sum() == rows.size * cols.size
        assert rows[-1] - rows[0] + 1 == rows.size and cols[-1] - cols[0] + 1 == cols.size
        sides.append(max(rows.size, cols.size))
    assert len(set(sides)) > 3


def test_strong_view_function_is_seeded_and_in_pixel_range():
    image = tf.constant(np.random.default_rng(3).integers(0, 256, (32, 32, 3)), tf.uint8)
    a = cifar100_strong_view(image, tf.constant([1, 2])).numpy()
    b = cifar100_strong_view(image, tf.constant([1, 2])).numpy()
    c = cifar100_strong_view(image, tf.constant([2, 2])).numpy()
    assert a.shape == (32, 32, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 255
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    fill = np.array(CIFAR100_CUTOUT_FILL, "float32")
    np.testing.assert_allclose(fill / 255, CIFAR100_MEAN, rtol=1e-6)
    assert np.isclose(a, fill, atol=1e-4).all(axis=-1).any()
    weak = cifar100_weak_view(image, tf.constant([1, 2])).numpy()
    assert weak.dtype == np.uint8 and weak.shape == (32, 32, 3)


def test_train_map_two_views_weak_is_the_single_view_map():
    image = tf.constant(np.random.default_rng(4).integers(0, 256, (32, 32, 3)), tf.uint8)
    example, seed = (image, tf.constant(3, tf.int64)), tf.constant([5, 6])
    single, label = cifar100_train_map()(example, seed)
    (weak, strong), label2 = cifar100_train_map(two_views=True)(example, seed)
    np.testing.assert_array_equal(weak.numpy(), single.numpy())
    assert strong.dtype == tf.float32 and int(label2) == int(label) == 3
    with pytest.raises(ValueError, match="strong_augmenter"):
        cifar100_train_map(strong_augmenter="randaugment")


def test_strong_augment_callable_runs_before_normalisation():
    images = np.full((3, 32, 32, 3), 200, "uint8")
    with fixed_examples(images, np.arange(3)):
        train, _ = cifar100_datasets(
            batch_size=3, strong_augment=lambda x: tf.fill(tf.shape(x), 255.0)
        )
        ((weak, strong), _), = batches(train)
    np.testing.assert_allclose(
        strong, np.broadcast_to(HIGH, strong.shape), atol=1e-5
    )
    expected_weak = (200 / 255 - MEAN) / STD
    # Weak view: the image, or zero padding where the crop was shifted.
    assert np.all(
        np.isclose(weak, expected_weak, atol=1e-5)
        | np.isclose(weak, LOW, atol=1e-5)
    )


@pytest.mark.every_backend
def test_fit_on_pipeline_with_current_backend():
    with tfds.testing.mock_data(num_examples=8):
        train, test = cifar100_datasets(batch_size=4)
        model = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(100),
            ]
        )
        model.compile(
            "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        history = model.fit(
            train, validation_data=test, epochs=1, verbose=0, shuffle=False
        )
    assert np.isfinite(history.history["loss"][0])


def test_missing_dataset_error_explains_preparation(tmp_path):
    with pytest.raises(RuntimeError) as info:
        cifar100_datasets(data_dir=str(tmp_path), download=False)
    message = str(info.value)
    assert "tfds build cifar100" in message
    assert str(tmp_path) in message
    assert "cifar-100-binary.tar.gz" in message
    assert "could not find data" in message  # The original TFDS error.
    assert isinstance(info.value.__cause__, AssertionError)


def test_download_failure_is_reported_clearly(monkeypatch):
    def fail(*args, **kwargs):
        raise tfds.download.DownloadError("Failed to get url https://x")

    monkeypatch.setattr(tfds, "load", fail)
    with pytest.raises(RuntimeError, match="tfds build cifar100") as info:
        cifar100_datasets(data_dir="/somewhere")
    assert "'/somewhere'" in str(info.value)
    assert "Failed to get url" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": 2.0},
        {"take": 0},
        {"eval_batch_size": -1},
        {"strong_augment": "randaugment"},
        {"two_views": "yes"},
        {"two_views": 1},
    ],
)
def test_invalid_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"`{name}`"):
        cifar100_datasets(**kwargs)
