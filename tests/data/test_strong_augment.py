"""Tests for the strong view: RandAugment's operations, Cutout, seeds."""

import numpy as np
import pytest
import tensorflow as tf

from keras_unikd.data import augment as aug

Image = pytest.importorskip("PIL.Image")
ImageEnhance = pytest.importorskip("PIL.ImageEnhance")
ImageOps = pytest.importorskip("PIL.ImageOps")

# The reference's list (mdistiller/dataset/cifar100.py, `augment_list`).
REFERENCE_OPS = (
    ("auto_contrast", 0, 1),
    ("brightness", 0.05, 0.95),
    ("color", 0.05, 0.95),
    ("contrast", 0.05, 0.95),
    ("equalize", 0, 1),
    ("identity", 0, 1),
    ("posterize", 4, 8),
    ("rotate", -30, 30),
    ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3),
    ("solarize", 0, 256),
    ("translate_x", -0.3, 0.3),
    ("translate_y", -0.3, 0.3),
)


def pil_op(img, name, v):
    """The reference operation, written with PIL as the reference does."""
    width, height = img.size
    affine = {
        "shear_x": (1, v, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, v, 1, 0),
        "translate_x": (1, 0, v * width, 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, v * height),
    }
    if name in affine:
        return img.transform(img.size, Image.AFFINE, affine[name])
    enhance = {
        "brightness": ImageEnhance.Brightness,
        "color": ImageEnhance.Color,
        "contrast": ImageEnhance.Contrast,
        "sharpness": ImageEnhance.Sharpness,
    }
    if name in enhance:
        return enhance[name](img).enhance(v)
    return {
        "auto_contrast": lambda: ImageOps.autocontrast(img),
        "equalize": lambda: ImageOps.equalize(img),
        "identity": lambda: img,
        "posterize": lambda: ImageOps.posterize(img, max(1, int(v))),
        "rotate": lambda: img.rotate(v),
        "solarize": lambda: ImageOps.solarize(img, v),
    }[name]()


def test_operation_table_is_the_reference():
    assert tuple((n, float(lo), float(hi)) for n, lo, hi in REFERENCE_OPS) == (
        aug.RAND_AUGMENT_OPS
    )
    assert len(aug.GRAYSCALE_RAND_AUGMENT_OPS) == 13
    assert "color" not in aug.GRAYSCALE_RAND_AUGMENT_OPS


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", [n for n, _, _ in REFERENCE_OPS])
def test_each_operation_matches_pil(name, channels):
    rng = np.random.default_rng(len(name) + channels)
    low, high = dict((n, (lo, hi)) for n, lo, hi in REFERENCE_OPS)[name]
    for i in range(4):
        x = rng.integers(0, 256, (32, 30, channels), dtype=np.uint8)
        if i % 2:
            x = (x // 4 + 60).astype(np.uint8)  # Low contrast, 64 levels.
        v = float(low + (high - low) * rng.random())
        img = Image.fromarray(x[..., 0] if channels == 1 else x)
        expected = np.asarray(pil_op(img, name, v)).reshape(x.shape)
        out = aug.apply_rand_augment_op(x, name, v).numpy()
        assert out.shape == x.shape and out.dtype == np.float32
        if name == "rotate":
            # Nearest-neighbour ties at rotated pixel centres may round
            # the other way than PIL's fixed-point arithmetic.
            assert (out != expected).mean() < 0.01
        else:
            np.testing.assert_array_equal(out, expected)


def test_operations_change_the_image_as_documented():
    x = np.full((8, 8, 1), 200, np.uint8)
    x[0, 0] = 10

    def out(name, v):
        return aug.apply_rand_augment_op(x, name, v).numpy()

    np.testing.assert_array_equal(out("brightness", 0.5)[1:, 1:], 100)
    np.testing.assert_array_equal(out("solarize", 128)[1:, 1:], 55)
    np.testing.assert_array_equal(out("solarize", 201)[1:, 1:], 200)
    np.testing.assert_array_equal(out("posterize", 4.9)[1:, 1:], 192)  # 4 bits.
    stretched = out("auto_contrast", 0)
    assert stretched.min() == 0 and stretched.max() == 255
    # Translating by half the width brings in black columns on one side.
    moved = out("translate_x", 0.5)
    np.testing.assert_array_equal(moved[:, 4:], 0)
    np.testing.assert_array_equal(moved[1:, :4], 200)


def test_rand_augment_is_seeded_integer_valued_and_in_range():
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    outs = [aug.rand_augment(x, tf.constant([s, 1])).numpy() for s in range(12)]
    again = aug.rand_augment(x, tf.constant([0, 1])).numpy()
    np.testing.assert_array_equal(outs[0], again)
    for out in outs:
        assert out.shape == x.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 255
        np.testing.assert_array_equal(out, np.round(out))
    assert len({o.tobytes() for o in outs}) >= 10


def test_rand_augment_draws_magnitudes_uniformly_over_the_range():
    # Brightness of a white image: every pixel becomes floor(255 * factor).
    white = np.full((4, 4, 1), 255, np.uint8)
    draw = tf.function(lambda seed: aug.rand_augment(white, seed, num_ops=1, ops=["brightness"]))
    factors = []
    for s in range(200):
        out = draw(tf.constant([s, 9]))
        value = np.unique(out.numpy())
        assert value.size == 1
        factors.append(value[0] / 255.0)
    factors = np.array(factors)
    assert factors.min() >= 0.05 - 1 / 255 and factors.max() <= 0.95
    # Uniform on [0.05, 0.95]: each fifth of the range gets about 40 draws.
    counts = np.histogram(factors, bins=5, range=(0.05 - 1 / 255, 0.95))[0]
    assert counts.min() >= 20, counts


def test_rand_augment_applies_num_ops_operations_with_replacement():
    white = np.full((4, 4, 1), 255, np.uint8)
    # Two brightness draws in a row: the factors multiply (with
    # truncation), so the result lies below 0.95 ** 2 * 255.
    out = aug.rand_augment(white, tf.constant([3, 3]), num_ops=2, ops=["brightness"]).numpy()
    assert out.max() <= np.floor(0.95 * np.floor(0.95 * 255))
    x = np.random.default_rng(1).integers(0, 256, (6, 6, 3)).astype("float32")
    identity = aug.rand_augment(x, tf.constant([0, 0]), num_ops=3, ops=["identity"])
    np.testing.assert_array_equal(identity.numpy(), x)


def test_grayscale_images_draw_from_the_13_operations_without_color():
    x = np.random.default_rng(2).integers(0, 256, (9, 9, 1)).astype("float32")
    for s in range(8):
        seed = tf.constant([s, 2])
        default = aug.rand_augment(x, seed).numpy()
        explicit = aug.rand_augment(x, seed, ops=aug.GRAYSCALE_RAND_AUGMENT_OPS).numpy()
        np.testing.assert_array_equal(default, explicit)
    # Color would be a wasted draw: it leaves grey images unchanged.
    out = aug.rand_augment(x, tf.constant([1, 2]), num_ops=1, ops=["color"]).numpy()
    np.testing.assert_array_equal(out, x)
    with pytest.raises(ValueError, match="unknown operation"):
        aug.apply_rand_augment_op(x, "invert", 0.0)


def cutout_box(out, image, fill):
    """The rectangle where `out` holds `fill` and differs from `image`."""
    filled = np.isclose(out, fill, atol=1e-4).all(axis=-1)
    rows = np.flatnonzero(filled.any(axis=1))
    cols = np.flatnonzero(filled.any(axis=0))
    assert rows.size and cols.size
    box = np.zeros_like(filled)
    box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    # One solid rectangle of fill, and the image everywhere else.
    np.testing.assert_array_equal(filled, box)
    np.testing.assert_array_equal(out[~box], image[~box].astype("float32"))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def test_cutout_fills_one_square_with_the_fill_colour():
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fill = np.array([129.3, 124.1, 112.4], "float32")  # Not integer pixels.
    draw = tf.function(lambda seed: aug.cutout(image, seed, 16, fill))
    sides, clipped, full = set(), 0, 0
    for s in range(150):
        out = draw(tf.constant([s, 4])).numpy()
        assert out.dtype == np.float32 and out.shape == image.shape
        top, bottom, left, right = cutout_box(out, image, fill)
        height, width = bottom - top, right - left
        assert 1 <= height <= 16 and 1 <= width <= 16
        if height == width and 0 < top and bottom < 32 and 0 < left and right < 32:
            full += 1
            sides.add(height)
        elif height != width:
            # Not square: clipped at the border.
            assert top == 0 or bottom == 32 or left == 0 or right == 32
            clipped += 1
    assert full > 50 and clipped > 5
    assert max(sides) == 16 and min(sides) <= 3 and len(sides) >= 12


def test_cutout_is_seeded_and_takes_a_scalar_fill():
    image = np.zeros((28, 28, 1), np.uint8)
    a = aug.cutout(image, tf.constant([7, 7]), 14, 76.5).numpy()
    b = aug.cutout(image, tf.constant([7, 7]), 14, 76.5).numpy()
    c = aug.cutout(image, tf.constant([8, 7]), 14, 76.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {0.0, 76.5}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_size": 0}, "max_size"),
        ({"max_size": 4.0}, "max_size"),
        ({"fill": [1.0, 2.0]}, "one value per channel"),
    ],
)
def test_cutout_bad_arguments(kwargs, match):
    args = {"image": np.zeros((8, 8, 3)), "seed": tf.constant([0, 0]), "max_size": 4}
    args["fill"] = 0.0
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        aug.cutout(**args)


def test_strong_augment_ends_with_cutout_and_stays_in_range():
    image = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fill = (129.3, 124.1, 112.4)
    for s in range(6):
        seed = tf.constant([s, 5])
        out = aug.strong_augment(image, seed, fill=fill).numpy()
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
        np.testing.assert_array_equal(out, aug.strong_augment(image, seed, fill=fill).numpy())
        # RandAugment gives integer pixels; Cutout's fill is the only
        # non-integer colour, in one rectangle of side <= 16.
        filled = np.isclose(out, fill, atol=1e-4).all(axis=-1)
        rows, cols = np.flatnonzero(filled.any(1)), np.flatnonzero(filled.any(0))
        assert 1 <= rows.size <= 16 and 1 <= cols.size <= 16
        assert filled.sum() == rows.size * cols.size
        np.testing.assert_array_equal(out[~filled], np.round(out[~filled]))


def test_fold_seed_is_deterministic_and_distinct():
    seed = tf.constant([3, 4], tf.int64)
    a, b = aug.fold_seed(seed, 1).numpy(), aug.fold_seed(seed, 2).numpy()
    assert a.shape == (2,) and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, aug.fold_seed(seed, 1).numpy())
    assert not np.array_equal(a, seed.numpy())


@pytest.mark.parametrize(
    "image, kwargs, match",
    [
        (np.zeros((8, 8, 3)), {"num_ops": 0}, "num_ops"),
        (np.zeros((8, 8, 3)), {"ops": []}, "ops"),
        (np.zeros((8, 8, 3)), {"ops": ["identity", "cutout"]}, "ops"),
        (np.zeros((8, 8, 2)), {}, "C = 1 or 3"),
        (np.zeros((2, 8, 8, 3)), {}, "one image"),
    ],
)
def test_rand_augment_bad_arguments(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        aug.rand_augment(image, tf.constant([0, 0]), **kwargs)


def test_strong_augment_bad_cutout_size():
    with pytest.raises(ValueError, match="cutout_size"):
        aug.strong_augment(np.zeros((8, 8, 1)), tf.constant([0, 0]), fill=0.0, cutout_size=0)
