"""Batches that carry each example's row: `with_example_index` and the pipelines' option."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_unikd
from conftest import make_network
from conftest import random_uint8_images
from keras_unikd import terms
from keras_unikd.cache import build_teacher_cache
from keras_unikd.cache import cached_teacher_pipeline
from keras_unikd.data import cifar100_datasets
from keras_unikd.data import keyed_steps_per_epoch
from keras_unikd.data import make_image_pipeline
from keras_unikd.data import make_keyed_image_pipeline
from keras_unikd.data import with_example_index
from keras_unikd.terms.crd import ContrastiveRepresentation


def batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def split(batch_list):
    """`(inputs, indices, labels)` of indexed batches."""
    inputs = [x["inputs"] for x, _ in batch_list]
    return inputs, [x["example_index"] for x, _ in batch_list], [y for _, y in batch_list]


def assert_same(a, b):
    for left, right in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
        np.testing.assert_array_equal(left, right)


def test_with_example_index_on_arrays_and_datasets():
    x, y = np.zeros((5, 2), "float32"), np.arange(5) % 2
    inputs, labels = with_example_index(x, y)
    assert inputs["example_index"].dtype == np.int32 and labels is y
    np.testing.assert_array_equal(inputs["example_index"], np.arange(5))
    assert inputs["inputs"] is x
    multi, _ = with_example_index({"a": x, "b": x[:, :1]}, y)
    np.testing.assert_array_equal(multi["example_index"], np.arange(5))
    dataset = with_example_index(tf.data.Dataset.from_tensor_slices((x, y, y * 2.0)))
    elements = batches(dataset)
    assert [int(e[0]["example_index"]) for e in elements] == list(range(5))
    assert [float(e[2]) for e in elements] == [0.0, 2.0, 0.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="same length .* got lengths \\[4, 5\\]"):
        with_example_index(x, y[:4])
    with pytest.raises(ValueError, match="give a dataset of \\(x, y\\) examples alone"):
        with_example_index(tf.data.Dataset.from_tensor_slices((x, y)), y)


def test_keyed_pipeline_carries_the_rows_it_keys():
    x, y = random_uint8_images(10, (8, 8, 1))
    options = dict(seed=0, epochs=2, augment=True, crop_padding=2)
    keyed = batches(make_keyed_image_pipeline(x, y, 4, with_keys=True, **options))
    indexed = batches(make_keyed_image_pipeline(x, y, 4, with_example_index=True, **options))
    inputs, rows, labels = split(indexed)
    assert_same(inputs, [views for views, _, _ in keyed])
    assert_same(rows, [keys["index"] for _, _, keys in keyed])
    assert_same(labels, [y[r] for r in rows])
    assert all(r.dtype == np.int32 for r in rows)
    with pytest.raises(ValueError, match="`with_example_index` must be True or False"):
        make_keyed_image_pipeline(x, y, 4, with_example_index=1, **options)


@pytest.mark.parametrize("training", [False, True])
def test_image_pipeline_carries_the_rows(training):
    x, y = random_uint8_images(12, (8, 8, 1))
    options = dict(training=training, augment=True, crop_padding=2, shuffle_seed=3)
    if training:
        options["two_views"] = True
    plain = batches(make_image_pipeline(x, y, 5, **options))
    inputs, rows, labels = split(
        batches(make_image_pipeline(x, y, 5, with_example_index=True, **options))
    )
    assert_same(inputs, [views for views, _ in plain])  # the same batches, indexed
    assert_same(labels, [y[r] for r in rows])
    assert sorted(np.concatenate(rows).tolist()) == list(range(12))
    if not training:
        np.testing.assert_allclose(
            np.concatenate(inputs), x[np.concatenate(rows)] / 255.0, rtol=1e-6
        )


def fixed_examples(images, labels):
    """A `mock_data(as_dataset_fn=...)` serving the given examples."""

    def as_dataset(self, split=None, decoders=None, read_config=None, **kw):
        return tf.data.Dataset.from_tensor_slices(
            {"image": np.asarray(images, "uint8"), "label": np.asarray(labels)}
        )

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_cifar100_pipeline_carries_the_rows():
    images, labels = random_uint8_images(10, (32, 32, 3), num_classes=100)
    with fixed_examples(images, labels):
        options = dict(batch_size=4, shuffle_seed=1, two_views=True)
        plain = batches(cifar100_datasets(**options)[0])
        indexed, test = cifar100_datasets(with_example_index=True, **options)
        inputs, rows, got_labels = split(batches(indexed))
    assert_same(inputs, [views for views, _ in plain])
    assert_same(got_labels, [labels[r] for r in rows])
    assert sorted(np.concatenate(rows).tolist()) == list(range(10))
    assert test.element_spec[0].shape.rank == 4  # the test pipeline stays plain


def test_cached_batches_carry_the_rows_and_train_crd(tmp_path):
    """A teacher cache's batches with indices: CRD trains from them without the teacher."""
    x, y = random_uint8_images(24, (12, 12, 1))
    keras.utils.set_random_seed(0)
    teacher, student = make_network(8, "t"), make_network(4, "s")
    crd = ContrastiveRepresentation("t_pool", "s_pool", labels=y, num_negatives=4, seed=0)
    ce = terms.CrossEntropy()
    cache = build_teacher_cache(
        str(tmp_path), teacher, [ce, crd], x, y, seed=0, epochs=2, augment=True, verbose=0
    )
    data = cached_teacher_pipeline(cache, x, y, batch_size=8, with_example_index=True)
    keyed = make_keyed_image_pipeline(
        x, y, 8, 0, 2, augmentation=cache.augmentation, with_keys=True
    )
    (first, labels), (_, keyed_labels, keys) = next(iter(data)), next(iter(keyed))
    assert sorted(first) == ["cached_teacher", "example_index", "inputs"]
    np.testing.assert_array_equal(first["example_index"], keys["index"])
    np.testing.assert_array_equal(labels, keyed_labels)
    distiller = keras_unikd.Distiller(cache.teacher_source(), student, terms=[ce, crd])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    before = keras.ops.convert_to_numpy(crd.teacher_memory)
    steps = keyed_steps_per_epoch(len(x), 8)
    history = distiller.fit(data, steps_per_epoch=steps, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["crd_loss"]))
    assert not np.allclose(before, keras.ops.convert_to_numpy(crd.teacher_memory))
    plain = cached_teacher_pipeline(cache, x, y, batch_size=8)
    with pytest.raises(ValueError, match="read each example's row in the training set, but"):
        distiller.fit(plain, steps_per_epoch=steps, epochs=1, verbose=0)
