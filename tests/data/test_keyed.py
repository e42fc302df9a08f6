"""Tests for keyed augmentation: views as functions of (seed, epoch, index)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_unikd.data import CIFAR100_KEYED_OPTIONS
from keras_unikd.data import keyed_epoch_order
from keras_unikd.data import keyed_example_seed
from keras_unikd.data import keyed_steps_per_epoch
from keras_unikd.data import keyed_view_seed
from keras_unikd.data import keyed_views
from keras_unikd.data import make_keyed_image_pipeline
from keras_unikd.data.cifar100 import cifar100_normalize
from keras_unikd.data.cifar100 import cifar100_strong_view
from keras_unikd.data.cifar100 import cifar100_weak_view
from keras_unikd.data.resume import RESTART_ATTRIBUTE

N = 11
EPOCHS = 3
# Flip, crop and both views: every random draw of the pipelines.
FULL = dict(augment=True, crop_padding=2, two_views=True, mean=0.3, std=0.2)


def toy_images(n=N, h=8, w=8, c=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    y = (np.arange(n) % 5).astype("int64")
    return x, y


def batches(ds):
    """The elements of `ds` as nested NumPy arrays."""
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        tf.nest.assert_same_structure(x, y)
        for u, v in zip(tf.nest.flatten(x), tf.nest.flatten(y)):
            np.testing.assert_array_equal(u, v)


def by_key(ds):
    """{(epoch, index): (views, label)} from a pipeline built `with_keys`."""
    out = {}
    for views, labels, keys in batches(ds):
        for j, (e, i) in enumerate(zip(keys["epoch"], keys["index"])):
            key = (int(e), int(i))
            assert key not in out
            out[key] = (tf.nest.map_structure(lambda v, j=j: v[j], views), labels[j])
    return out


def assert_same_by_key(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        for u, v in zip(tf.nest.flatten(a[key]), tf.nest.flatten(b[key])):
            np.testing.assert_array_equal(u, v)


def keyed(x, y, batch_size=4, **kwargs):
    options = dict(FULL, seed=7, epochs=EPOCHS, with_keys=True)
    options.update(kwargs)
    return make_keyed_image_pipeline(x, y, batch_size, **options)


def test_same_views_across_two_builds():
    x, y = toy_images()
    first = batches(keyed(x, y))
    assert_same_batches(first, batches(keyed(x, y)))
    # Iterating the same dataset again gives the same batches too.
    ds = keyed(x, y)
    assert_same_batches(batches(ds), batches(ds))
    assert_same_batches(first, batches(ds))


def test_views_independent_of_batch_size():
    x, y = toy_images()
    small, large = keyed(x, y, batch_size=4), keyed(x, y, batch_size=7)
    assert_same_by_key(by_key(small), by_key(large))
    # And the order within each epoch too.
    order = [b[2]["index"] for b in batches(small)]
    assert np.array_equal(
        np.concatenate(order), np.concatenate([b[2]["index"] for b in batches(large)])
    )


def test_batches_independent_of_parallelism():
    x, y = toy_images()
    reference = batches(keyed(x, y, num_parallel_calls=1))
    assert_same_batches(reference, batches(keyed(x, y, num_parallel_calls=3)))
    assert_same_batches(reference, batches(keyed(x, y, num_parallel_calls=tf.data.AUTOTUNE)))
    options = tf.data.Options()
    options.deterministic = False
    options.threading.private_threadpool_size = 3
    loose = keyed(x, y, num_parallel_calls=3).with_options(options)
    assert_same_batches(reference, batches(loose))


def epoch_orders(ds, epochs):
    keys = [b[2] for b in batches(ds)]
    epoch = np.concatenate([k["epoch"] for k in keys])
    index = np.concatenate([k["index"] for k in keys])
    return [index[epoch == e] for e in epochs]


def test_each_epoch_is_a_permutation_differing_across_epochs_and_seeds():
    x, y = toy_images()
    orders = epoch_orders(keyed(x, y), range(EPOCHS))
    for e, order in enumerate(orders):
        np.testing.assert_array_equal(np.sort(order), np.arange(N))
        np.testing.assert_array_equal(order, keyed_epoch_order(7, e, N).numpy())
    assert len({tuple(o) for o in orders}) == EPOCHS
    other_seed = epoch_orders(keyed(x, y, seed=8), range(EPOCHS))
    for order, other in zip(orders, other_seed):
        assert not np.array_equal(order, other)
    # Each epoch's batches stay in that epoch.
    for b in batches(keyed(x, y, batch_size=3)):
        assert len(set(b[2]["epoch"].tolist())) == 1


def test_labels_follow_the_indices():
    x, y = toy_images()
    for _, labels, keys in batches(keyed(x, y)):
        np.testing.assert_array_equal(labels, y[keys["index"]])
        assert labels.dtype == np.int32 and keys["index"].dtype == np.int32


@pytest.mark.parametrize("two_views", [False, True])
def test_recomputed_views_equal_the_pipeline(two_views):
    x, y = toy_images()
    options = dict(FULL, two_views=two_views)
    seen = by_key(keyed(x, y, **options))
    for epoch in range(EPOCHS):
        indices = np.arange(N)[::-1]
        views = keyed_views(x, 7, epoch, indices, **options)
        for j, i in enumerate(indices):
            expected = tf.nest.map_structure(lambda v, j=j: v[j].numpy(), views)
            for u, v in zip(tf.nest.flatten(seen[(epoch, i)][0]), tf.nest.flatten(expected)):
                np.testing.assert_array_equal(u, v)
    # One epoch per index works as well.
    epochs = np.arange(N) % EPOCHS
    views = keyed_views(x, 7, epochs, np.arange(N), **options)
    for i in range(N):
        for u, v in zip(
            tf.nest.flatten(seen[(int(epochs[i]), i)][0]),
            tf.nest.flatten(tf.nest.map_structure(lambda t, i=i: t[i].numpy(), views)),
        ):
            np.testing.assert_array_equal(u, v)


def test_two_view_batches():
    x, y = toy_images(c=3)
    two = batches(keyed(x, y, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3]))
    one = batches(
        keyed(x, y, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3], two_views=False, with_keys=False)
    )
    assert len(two) == len(one)
    for ((weak, strong), labels, _), (single, single_labels) in zip(two, one):
        assert weak.shape == strong.shape == (len(labels), 8, 8, 3)
        assert weak.dtype == strong.dtype == np.float32
        # The weak view is the single-view pipeline's image.
        np.testing.assert_array_equal(weak, single)
        np.testing.assert_array_equal(labels, single_labels)
        assert not np.array_equal(weak, strong)


def test_resume_at_epoch_k_equals_the_rest_of_a_full_run():
    x, y = toy_images()
    steps = keyed_steps_per_epoch(N, 4)
    full = batches(keyed(x, y))
    for k in range(1, EPOCHS):
        resumed = keyed(x, y, start_epoch=k)
        assert len(resumed) == (EPOCHS - k) * steps
        assert_same_batches(full[k * steps :], batches(resumed))


def test_resume_at_any_batch_equals_the_rest_of_a_full_run():
    x, y = toy_images()
    steps = keyed_steps_per_epoch(N, 4)
    full = batches(keyed(x, y))
    for epoch, batch in [(0, 1), (1, steps - 1), (EPOCHS - 1, 2)]:
        resumed = keyed(x, y, start_epoch=epoch, start_batch=batch)
        assert len(resumed) == (EPOCHS - epoch) * steps - batch
        assert_same_batches(full[epoch * steps + batch :], batches(resumed))
    # The pipeline restarts itself at any batch (what StepBackup's resume calls).
    restarted = getattr(keyed(x, y), RESTART_ATTRIBUTE)(1, 2)
    assert_same_batches(full[steps + 2 :], batches(restarted))


def test_drop_remainder_and_cardinality():
    x, y = toy_images()
    ds = keyed(x, y, batch_size=4, drop_remainder=True, two_views=False)
    steps = keyed_steps_per_epoch(N, 4, drop_remainder=True)
    got = batches(ds)
    assert len(ds) == len(got) == EPOCHS * steps
    assert all(len(b[1]) == 4 for b in got)
    assert ds.element_spec[0].shape.as_list() == [4, 8, 8, 1]


def test_keys_as_tensors_match_python_ints():
    for epoch, index in [(0, 0), (5, 3)]:
        python = keyed_example_seed(3, epoch, index)
        tensor = keyed_example_seed(3, tf.constant(epoch), tf.constant(index, tf.int64))
        np.testing.assert_array_equal(python.numpy(), tensor.numpy())
    seeds = {tuple(keyed_example_seed(3, e, i).numpy()) for e in range(3) for i in range(4)}
    assert len(seeds) == 12
    assert not np.array_equal(
        keyed_view_seed(3, 1, 2, "weak").numpy(), keyed_view_seed(3, 1, 2, "strong").numpy()
    )


def test_cifar100_keyed_views_are_the_cifar100_transforms():
    x, y = toy_images(n=5, h=32, w=32, c=3)
    seed, epoch = 4, 2
    weak, strong = keyed_views(
        x, seed, epoch, np.arange(5), two_views=True, **CIFAR100_KEYED_OPTIONS
    )
    for i in range(5):
        image = tf.constant(x[i])
        expected_weak = cifar100_normalize(
            cifar100_weak_view(image, keyed_view_seed(seed, epoch, i, "weak"))
        )
        expected_strong = cifar100_normalize(
            cifar100_strong_view(image, keyed_view_seed(seed, epoch, i, "strong"))
        )
        np.testing.assert_array_equal(weak[i].numpy(), expected_weak.numpy())
        np.testing.assert_array_equal(strong[i].numpy(), expected_strong.numpy())


def tiny_model(shape):
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(5)])


def test_fit_reads_keyed_epoch_e_in_its_epoch_e():
    x, y = toy_images()
    steps = keyed_steps_per_epoch(N, 4)
    plain = make_keyed_image_pipeline(x, y, 4, seed=1, epochs=EPOCHS, augment=True)
    model = tiny_model(x.shape[1:])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(plain, epochs=EPOCHS, steps_per_epoch=steps, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == EPOCHS
    assert np.all(np.isfinite(history.history["loss"]))

    class KeysSeen(keras.Model):
        """Trains on (x, y) and logs the epoch key of its batches."""

        def train_step(self, data):
            images, labels, keys = data
            logs = dict(super().train_step((images, labels)))
            logs["first_epoch_key"] = tf.reduce_min(keys["epoch"])
            logs["last_epoch_key"] = tf.reduce_max(keys["epoch"])
            return logs

    def keys_model():
        inputs = keras.Input(x.shape[1:])
        outputs = keras.layers.Dense(5)(keras.layers.Flatten()(inputs))
        model = KeysSeen(inputs, outputs)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    for start in (0, 1):
        ds = make_keyed_image_pipeline(
            x, y, 4, seed=1, epochs=EPOCHS, start_epoch=start, augment=True, with_keys=True
        )
        model = keys_model()
        history = model.fit(
            ds, epochs=EPOCHS, initial_epoch=start, steps_per_epoch=steps, shuffle=False, verbose=0
        )
        expected = list(range(start, EPOCHS))
        assert [int(v) for v in history.history["first_epoch_key"]] == expected
        assert [int(v) for v in history.history["last_epoch_key"]] == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(seed=None), "needs an integer `seed`"),
        (dict(seed=-1), "`seed` must be an integer >= 0"),
        (dict(epochs=0), "`epochs` must be a positive integer"),
        (dict(start_epoch=EPOCHS), "total number of planned epochs"),
        (dict(start_epoch=-1), "`start_epoch` must be an integer >= 0"),
        (dict(start_batch=N), "`start_batch` must be an integer >= 0 and below 3; got 11"),
        (dict(batch_size=0), "`batch_size` must be a positive integer"),
        (dict(batch_size=N + 1, drop_remainder=True), "leaves no batch"),
        (dict(mean=0.5, std=None), "pass both `mean` and `std`"),
        (dict(std=0.0), "`std` must be positive"),
        (dict(crop_padding=-1), "`crop_padding` must be None or an integer >= 0"),
        (dict(two_views="yes"), "`two_views` must be True or False"),
        (dict(with_keys=1), "`with_keys` must be True or False"),
        (dict(num_parallel_calls=0), "`num_parallel_calls` must be None"),
    ],
)
def test_pipeline_errors(kwargs, match):
    x, y = toy_images()
    with pytest.raises(ValueError, match=match):
        keyed(x, y, **kwargs)


def test_input_errors():
    x, y = toy_images()
    with pytest.raises(ValueError, match="channels last"):
        keyed(x[..., 0], y)
    with pytest.raises(ValueError, match="one integer label per"):
        keyed(x, y[:-1])
    with pytest.raises(ValueError, match="`labels` must be integers"):
        keyed(x, y.astype("float32"))
    with pytest.raises(ValueError, match="needs images with 1 or 3 channels"):
        keyed(np.repeat(x, 2, axis=-1), y)
    with pytest.raises(ValueError, match=r"must lie in \[0, 11\)"):
        keyed_views(x, 0, 0, [0, N])
    with pytest.raises(ValueError, match="non-empty 1-D integer array"):
        keyed_views(x, 0, 0, [])
    with pytest.raises(ValueError, match="`epoch` must be a non-negative integer"):
        keyed_views(x, 0, -1, [0])
    with pytest.raises(ValueError, match="pass one epoch, or one per index"):
        keyed_views(x, 0, [0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="`view` must be one of"):
        keyed_view_seed(0, 0, 0, view="medium")
    with pytest.raises(ValueError, match="`index` must be an integer >= 0"):
        keyed_example_seed(0, 0, -3)
    with pytest.raises(ValueError, match="`num_examples` must be a positive integer"):
        keyed_epoch_order(0, 0, 0)
