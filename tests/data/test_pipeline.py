import numpy as np
import pytest
import tensorflow as tf

from keras_unikd.data import channel_stats
from keras_unikd.data import make_image_pipeline
from keras_unikd.data import take_subset


def toy_images(n=10, h=8, w=8, c=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    y = (np.arange(n) % 5).astype("int64")
    return x, y


def collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_eval_pipeline_shapes_dtypes_and_order():
    x, y = toy_images(10)
    ds = make_image_pipeline(x, y, batch_size=4, training=False)
    assert isinstance(ds, tf.data.Dataset)
    batches = list(ds)
    assert [tuple(b[0].shape) for b in batches] == [
        (4, 8, 8, 1),
        (4, 8, 8, 1),
        (2, 8, 8, 1),
    ]
    assert all(b[0].dtype == tf.float32 for b in batches)
    assert all(b[1].dtype == tf.int32 for b in batches)
    xs, ys = collect(ds)
    np.testing.assert_allclose(xs, x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ys, y)


def test_drop_remainder():
    x, y = toy_images(10)
    ds = make_image_pipeline(x, y, 4, training=False, drop_remainder=True)
    assert [b[0].shape[0] for b in ds] == [4, 4]
    assert ds.element_spec[0].shape.as_list() == [4, 8, 8, 1]


def test_normalization_with_mean_std():
    x = np.stack(
        [np.full((2, 2), 0), np.full((2, 2), 255)], axis=-1
    ).astype("uint8")[None].repeat(3, axis=0)  # (3, 2, 2, 2)
    y = np.zeros(3, "int32")
    ds = make_image_pipeline(
        x, y, 3, training=False, mean=[0.5, 0.25], std=[0.5, 0.25]
    )
    xs, _ = collect(ds)
    np.testing.assert_allclose(xs[..., 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(xs[..., 1], 3.0, atol=1e-6)


def test_scalar_mean_std_broadcast():
    x, y = toy_images(4, c=3)
    ds = make_image_pipeline(x, y, 4, training=False, mean=0.5, std=0.5)
    xs, _ = collect(ds)
    np.testing.assert_allclose(xs, (x / 255.0 - 0.5) / 0.5, atol=1e-5)


def test_channel_stats_matches_numpy_and_standardizes():
    x, y = toy_images(50, c=3, seed=1)
    mean, std = channel_stats(x)
    assert mean.shape == (3,) and mean.dtype == np.float32
    f = x.astype("float64") / 255.0
    np.testing.assert_allclose(mean, f.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, f.std(axis=(0, 1, 2)), rtol=1e-5)
    xs, _ = collect(
        make_image_pipeline(x, y, 16, training=False, mean=mean, std=std)
    )
    np.testing.assert_allclose(xs.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(xs.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_channel_stats_errors():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        channel_stats(np.zeros((4, 8, 8), "uint8"))


def test_training_shuffles_but_keeps_examples():
    x, y = toy_images(40)
    y = np.arange(40)
    ds = make_image_pipeline(x, y, 8, training=True, shuffle_seed=1)
    xs, ys = collect(ds)
    assert sorted(ys.tolist()) == list(range(40))
    assert ys.tolist() != list(range(40))
    # Image/label pairing survives the shuffle.
    np.testing.assert_allclose(xs, x[ys] / 255.0, rtol=1e-6)
    # Reshuffled every epoch.
    _, ys2 = collect(ds)
    assert ys2.tolist() != ys.tolist()


def test_augment_flip_only_keeps_shapes_and_pixels():
    x, y = toy_images(16, h=6, w=7, c=2)
    y = np.arange(16)
    ds = make_image_pipeline(
        x, y, 5, training=True, augment=True, shuffle_seed=0
    )
    xs, ys = collect(ds)
    assert xs.shape == (16, 6, 7, 2) and xs.dtype == np.float32
    ref = x[ys] / 255.0
    flipped = ref[:, :, ::-1, :]
    for a, r, f in zip(xs, ref, flipped):
        assert np.allclose(a, r) or np.allclose(a, f)
    # With 16 images some must be flipped and some not.
    n_flipped = sum(
        not np.allclose(a, r) for a, r in zip(xs, ref)
    )
    assert 0 < n_flipped < 16


def test_augment_crop_keeps_shapes_and_is_reproducible():
    x, y = toy_images(12, h=28, w=28)
    x = np.maximum(x, 1)  # No zero pixels, so padding is detectable.
    kwargs = dict(
        batch_size=4,
        training=True,
        augment=True,
        shuffle_seed=7,
        crop_padding=2,
        mean=0.5,
        std=0.5,
    )
    xs, ys = collect(make_image_pipeline(x, y, **kwargs))
    assert xs.shape == (12, 28, 28, 1)
    assert ys.dtype == np.int32
    # Padded pixels are (0 - 0.5) / 0.5 = -1; some crops must show padding.
    assert (xs == -1.0).any()
    assert xs.min() >= -1.0 and xs.max() <= 1.0
    xs2, ys2 = collect(make_image_pipeline(x, y, **kwargs))
    np.testing.assert_array_equal(ys, ys2)
    np.testing.assert_array_equal(xs, xs2)


def test_augment_ignored_for_eval():
    x, y = toy_images(6)
    ds = make_image_pipeline(x, y, 6, training=False, augment=True, crop_padding=2)
    xs, _ = collect(ds)
    np.testing.assert_allclose(xs, x / 255.0, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(batch_size=2, mean=0.5), "both `mean` and `std`"),
        (dict(batch_size=2, mean=0.5, std=0.0), "`std` must be positive"),
        (dict(batch_size=2, mean=[0.1, 0.2], std=0.5), "one value per channel"),
        (dict(batch_size=2, crop_padding=-1), "crop_padding"),
    ],
)
def test_pipeline_argument_errors(kwargs, match):
    x, y = toy_images(4)
    with pytest.raises(ValueError, match=match):
        make_image_pipeline(x, y, training=False, **kwargs)


def test_pipeline_shape_errors():
    x, y = toy_images(4)
    with pytest.raises(ValueError, match="channels last"):
        make_image_pipeline(x[..., 0], y, 2, training=False)
    with pytest.raises(ValueError, match="one integer label per image"):
        make_image_pipeline(x, y[:3], 2, training=False)


def test_take_subset_balanced_and_deterministic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    x = np.arange(2000)[:, None] * np.ones((1, 3))
    xs, ys = take_subset(x, y, 500, seed=3)
    assert xs.shape == (500, 3) and ys.shape == (500,)
    assert np.bincount(ys, minlength=10).tolist() == [50] * 10
    idx = xs[:, 0].astype(int)
    assert len(np.unique(idx)) == 500  # no duplicates
    np.testing.assert_array_equal(y[idx], ys)  # pairing kept
    assert (np.diff(idx) > 0).all()  # original order kept
    xs2, ys2 = take_subset(x, y, 500, seed=3)
    np.testing.assert_array_equal(xs, xs2)
    xs3, _ = take_subset(x, y, 500, seed=4)
    assert not np.array_equal(xs, xs3)


def test_take_subset_remainder_and_short_classes():
    y = np.repeat(np.arange(4), [100, 100, 100, 3])
    x = np.arange(len(y))
    _, ys = take_subset(x, y, 43, seed=0)
    counts = np.bincount(ys, minlength=4)
    assert counts.sum() == 43
    assert counts[3] == 3  # all of the short class
    assert counts[:3].max() - counts[:3].min() <= 2
    _, ys = take_subset(x, y, 10, seed=0)
    counts = np.bincount(ys, minlength=4)
    assert sorted(counts.tolist()) == [2, 2, 3, 3]


def test_take_subset_errors():
    x = np.arange(10)
    y = np.arange(10) % 2
    for n in (0, 11, 2.0):
        with pytest.raises(ValueError, match="between 1 and 10"):
            take_subset(x, y, n)
    with pytest.raises(ValueError, match="one label per example"):
        take_subset(x, y[:5], 3)


def fashion_like(n=10, seed=0):
    """Small Fashion-MNIST-shaped data: uint8 (n, 28, 28, 1), int labels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), np.arange(n) % 10


def views(ds):
    """Every `((weak, strong), labels)` batch of `ds`, as numpy."""
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


TWO_VIEW_KWARGS = dict(
    batch_size=4, training=True, augment=True, crop_padding=2, shuffle_seed=3, mean=0.3, std=0.4
)


def test_two_views_structure_and_weak_is_the_single_view_pipeline():
    x, y = fashion_like(10)
    single = make_image_pipeline(x, y, **TWO_VIEW_KWARGS)
    double = make_image_pipeline(x, y, two_views=True, **TWO_VIEW_KWARGS)
    view = tf.TensorSpec((None, 28, 28, 1), tf.float32)
    assert double.element_spec == ((view, view), tf.TensorSpec((None,), tf.int32))
    single_b, double_b = views(single), views(double)
    assert [len(labels) for _, labels in double_b] == [4, 4, 2]
    low, high = (0 - 0.3) / 0.4, (1 - 0.3) / 0.4
    for (images, labels), ((weak, strong), labels2) in zip(single_b, double_b):
        np.testing.assert_array_equal(weak, images)
        np.testing.assert_array_equal(labels2, labels)
        assert strong.shape == weak.shape and strong.dtype == np.float32
        assert strong.min() >= low - 1e-5 and strong.max() <= high + 1e-5
        assert not np.allclose(strong, weak)
    # Seeded: a new pipeline gives the same batches, a new epoch new ones.
    again = make_image_pipeline(x, y, two_views=True, **TWO_VIEW_KWARGS)
    for b1, b2 in zip(double_b, views(again)):
        tf.nest.map_structure(np.testing.assert_array_equal, b1, b2)
    epoch2 = views(double)
    assert not np.array_equal(double_b[0][0][1], epoch2[0][0][1])


def test_two_views_strong_view_has_one_cutout_square_of_the_mean():
    x, y = fashion_like(8, seed=1)
    ds = make_image_pipeline(x, y, **{**TWO_VIEW_KWARGS, "batch_size": 8}, two_views=True)
    ((weak, strong), _), = views(ds)
    # The fill, 255 * mean = 76.5, normalises to 0; RandAugment's integer
    # pixels never do.
    assert not np.isclose(weak, 0.0, atol=1e-3).any()
    for image in strong[..., 0]:
        filled = np.isclose(image, 0.0, atol=1e-4)
        rows, cols = np.flatnonzero(filled.any(1)), np.flatnonzero(filled.any(0))
        assert 1 <= rows.size <= 14 and 1 <= cols.size <= 14  # Half of 28.
        assert filled.sum() == rows.size * cols.size  # One solid rectangle.
        assert np.ptp(rows) + 1 == rows.size and np.ptp(cols) + 1 == cols.size


def test_two_views_without_mean_fills_with_the_images_mean_colour():
    x, y = fashion_like(6, seed=2)
    mean = float(channel_stats(x)[0][0])  # In [0, 1]; pixels are only / 255.
    assert abs(255 * mean - round(255 * mean)) > 0.1  # Not a pixel value.
    ds = make_image_pipeline(x, y, 6, training=True, shuffle_seed=0, two_views=True)
    ((weak, strong), labels), = views(ds)
    # No `augment`: the weak view is the image itself.
    np.testing.assert_allclose(weak, x[labels] / 255.0, rtol=1e-6)
    for image in strong:
        assert np.isclose(image, mean, atol=1e-6).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(training=False, two_views=True), "needs `training=True`"),
        (dict(training=True, two_views="yes"), "`two_views` must be True or False"),
    ],
)
def test_two_views_argument_errors(kwargs, match):
    x, y = fashion_like(4)
    with pytest.raises(ValueError, match=match):
        make_image_pipeline(x, y, 2, **kwargs)


def test_two_views_needs_one_or_three_channels():
    x, y = toy_images(4, c=2)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        make_image_pipeline(x, y, 2, training=True, two_views=True)
