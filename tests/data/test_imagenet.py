"""Tests for the ImageNet TFDS pipelines (mocked TFDS, tiny images)."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_unikd.data import augment as aug
from keras_unikd.data import imagenet_datasets
from keras_unikd.data.imagenet import IMAGENET_MEAN
from keras_unikd.data.imagenet import IMAGENET_STD
from keras_unikd.data.imagenet import eval_resize_size
from keras_unikd.data.imagenet import imagenet_eval_map
from keras_unikd.data.imagenet import imagenet_train_map

MEAN = np.array(IMAGENET_MEAN, "float32")
STD = np.array(IMAGENET_STD, "float32")
LOW = (0.0 - MEAN) / STD
HIGH = (1.0 - MEAN) / STD


def fixed_examples(images, labels):
    """A `mock_data(as_dataset_fn=...)` serving the given images as PNGs.

    The pipelines skip TFDS decoding, so images are served encoded
    (losslessly) like the real JPEG strings.
    """

    def as_dataset(self, split=None, decoders=None, read_config=None, **kw):
        encoded = [tf.io.encode_png(np.asarray(im, "uint8")) for im in images]
        return tf.data.Dataset.from_tensor_slices(
            {"image": tf.stack(encoded), "label": np.asarray(labels)}
        )

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def gradient(height, width):
    """Float image whose pixel (r, c) holds (r, c, r + c) scaled to [0, 255]."""
    rows, cols = np.meshgrid(
        np.arange(height, dtype="float32"),
        np.arange(width, dtype="float32"),
        indexing="ij",
    )
    return np.stack([rows, cols, rows + cols], axis=-1) * (
        255.0 / (height + width)
    )


def batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def test_shapes_dtypes_and_take():
    with tfds.testing.mock_data(num_examples=5):
        train, val = imagenet_datasets(batch_size=2, image_size=32, take=3)
        train_b, val_b = batches(train), batches(val)
    spec = (
        tf.TensorSpec((None, 32, 32, 3), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    )
    assert train.element_spec == spec and val.element_spec == spec
    # Unseeded training pipelines emit batches in a non-deterministic order.
    assert sorted(len(y) for _, y in train_b) == [1, 2]
    assert [len(y) for _, y in val_b] == [2, 1]
    for x, y in train_b + val_b:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert np.all((y >= 0) & (y < 1000))
        assert np.all(x >= LOW - 1e-4) and np.all(x <= HIGH + 1e-4)


def test_default_image_size_is_224():
    with tfds.testing.mock_data(num_examples=2):
        train, val = imagenet_datasets(batch_size=2, eval_batch_size=1)
        (x, _), = batches(train)
        assert x.shape == (2, 224, 224, 3)
        assert [b[0].shape for b in batches(val)] == [(1, 224, 224, 3)] * 2
    assert eval_resize_size(224) == 256


def test_validation_pipeline_normalises_a_known_image():
    image = np.zeros((300, 260, 3), "uint8")
    image[..., 0] = 255
    image[..., 2] = 51
    with fixed_examples([image, image], [7, 9]):
        _, val = imagenet_datasets(batch_size=2, image_size=16)
        (x, y), = batches(val)
    np.testing.assert_array_equal(y, [7, 9])
    expected = (np.array([1.0, 0.0, 0.2]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(x, np.broadcast_to(expected, x.shape), atol=1e-4)


@pytest.mark.parametrize("shape", [(40, 60), (60, 40), (5, 7), (1, 300)])
def test_random_resized_crop_output_size(shape):
    image = tf.constant(gradient(*shape))
    for i in range(3):
        out = aug.random_resized_crop(image, 24, tf.constant([i, 0]))
        assert out.shape == (24, 24, 3) and out.dtype == tf.float32
        assert float(tf.reduce_min(out)) >= 0.0
        assert float(tf.reduce_max(out)) <= 255.0


def test_random_resized_crop_picks_a_window_with_the_requested_area():
    # area 1/4 and ratio 1 of a 40x40 image: a 20x20 window, resized to
    # 20x20 (identity), so the output is an exact window of the input.
    image = gradient(40, 40)
    windows = set()
    for i in range(10):
        out = aug.random_resized_crop(
            tf.constant(image), 20, tf.constant([i, 3]),
            scale=(0.25, 0.25), ratio=(1.0, 1.0),
        ).numpy()
        top = int(round(out[0, 0, 0] * 80 / 255))
        left = int(round(out[0, 0, 1] * 80 / 255))
        np.testing.assert_allclose(
            out, image[top : top + 20, left : left + 20], atol=1e-3
        )
        windows.add((top, left))
    assert len(windows) > 1


def test_train_map_flip_is_a_real_flip():
    image = gradient(16, 16).round().astype("uint8")
    train_map = imagenet_train_map(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    seen = set()
    for i in range(16):
        out, label = train_map(
            (tf.constant(image), tf.constant(3, tf.int64)), tf.constant([i, 9])
        )
        assert label.dtype == tf.int32 and int(label) == 3
        out = out.numpy()
        if np.array_equal(out, image[:, ::-1]):
            seen.add("flipped")
        else:
            np.testing.assert_array_equal(out, image)
            seen.add("same")
    assert seen == {"flipped", "same"}


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((300, 400), (256, 341)),
        ((400, 300), (341, 256)),
        ((256, 256), (256, 256)),
    ],
)
def test_resize_shorter_side(shape, expected):
    out = aug.resize_shorter_side(tf.zeros(shape + (3,), tf.uint8), 256)
    assert tuple(out.shape[:2]) == expected and out.dtype == tf.float32


def test_center_crop_picks_the_center():
    image = gradient(11, 20)
    out = aug.center_crop(tf.constant(image), 5).numpy()
    np.testing.assert_array_equal(out, image[3:8, 7:12])


def test_eval_map_resizes_then_center_crops_a_gradient():
    # The shorter side is already 256: the resize is the identity and the
    # 224 crop starts at row (256 - 224) // 2, column (512 - 224) // 2.
    image = gradient(256, 512).round().astype("uint8")
    out, label = imagenet_eval_map(224)(tf.constant(image), tf.constant(5))
    assert out.shape == (224, 224, 3) and int(label) == 5
    np.testing.assert_allclose(out.numpy(), image[16:240, 144:368], atol=1e-3)


def test_eval_map_on_small_image_upscales_and_crops():
    image = gradient(30, 60).round().astype("uint8")
    out, _ = imagenet_eval_map(8)(tf.constant(image), tf.constant(0))
    # Resized to 9 x 18 then cropped at (0, 5): the center column of the
    # crop sits at the image's center column.
    assert out.shape == (8, 8, 3)
    center_col_value = out.numpy()[:, 4, 1].mean()
    assert abs(center_col_value - image[:, 30, 1].mean()) < 10


def test_missing_manual_download_says_where_to_put_the_tars(
    monkeypatch, tmp_path
):
    def fail(*args, **kwargs):
        raise AssertionError(
            "Manual directory /x/downloads/manual does not exist or is empty."
        )

    monkeypatch.setattr(tfds, "load", fail)
    with pytest.raises(RuntimeError) as info:
        imagenet_datasets(data_dir=str(tmp_path))
    message = str(info.value)
    assert "ILSVRC2012_img_train.tar" in message
    assert "ILSVRC2012_img_val.tar" in message
    assert os.path.join(str(tmp_path), "downloads", "manual") in message
    assert "does not exist or is empty" in message
    assert isinstance(info.value.__cause__, AssertionError)

    with pytest.raises(RuntimeError, match="/my/tars"):
        imagenet_datasets(data_dir=str(tmp_path), manual_dir="/my/tars")


def test_unprepared_dataset_error_with_real_tfds(tmp_path):
    with pytest.raises(RuntimeError, match="ILSVRC2012_img_train.tar") as info:
        imagenet_datasets(data_dir=str(tmp_path), download=False)
    assert "could not find data" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"image_size": 0}, {"take": -2}, {"shuffle_buffer": 0}],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        imagenet_datasets(**kwargs)
