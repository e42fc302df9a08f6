"""The keyed training batches with the teacher's cached outputs attached."""

import numpy as np

from keras_unikd.cache import manifest as mf
from keras_unikd.cache.store import TeacherCache
from keras_unikd.teacher_source import CACHED_TEACHER
from keras_unikd.teacher_source import EXAMPLE_INDEX
from keras_unikd.teacher_source import INPUTS
from keras_unikd.teacher_source import VIEWS
from keras_unikd.validation import check_bool


def cached_teacher_pipeline(
    cache,
    images,
    labels,
    batch_size,
    start_epoch=0,
    two_views=None,
    drop_remainder=False,
    num_parallel_calls=None,
    with_example_index=False,
    start_batch=0,
):
    """The keyed training batches with the teacher's cached outputs attached.

    The batches are those of `make_keyed_image_pipeline(images, labels,
    batch_size, seed, cache.epochs, augmentation=...)` with the seed and
    `KeyedAugmentation` the cache was built with (read from its manifest, so
    the views cannot differ from the cached ones), each as `({"inputs": x,
    "cached_teacher": outputs}, labels)`: `x` is the batch of images, or the
    pair `(weak, strong)` of two-view batches, and `outputs` is
    `TeacherCache.lookup` of the batch's `(epoch, index)` keys, float32,
    `{view: {"logits": (batch, classes), "features": {layer path: (batch,
    channels)}}}`. A `Distiller` fed these batches reads the teacher's
    outputs from them and does not run the teacher (give it
    `cache.teacher_source()` to train without the teacher model). The lookup
    reads the memory-mapped epoch arrays in a `tf.numpy_function`, once per
    batch.

    The batches are global batches, and a Distiller trains from them as on
    one device under `tf.distribute.MirroredStrategy` (each replica gets its
    share of each batch), `MultiWorkerMirroredStrategy` (every worker
    computes the same batches and keeps its replicas' share: the auto-shard
    policy is `DATA`) and JAX's `keras.distribution.DataParallel` (each batch
    split over the devices); see `docs/guides/teacher-cache.md`.

    As with `make_keyed_image_pipeline`, the dataset is finite (epochs
    `start_epoch .. cache.epochs - 1`): pass `fit` the
    `keyed_steps_per_epoch(len(images), batch_size, drop_remainder)` as
    `steps_per_epoch` and `epochs=cache.epochs` (resume with
    `initial_epoch=start_epoch`).

    Args:
        cache: A `TeacherCache` from `open_teacher_cache` (or
            `build_teacher_cache`), opened for the training's epochs.
        images: The training images the cache was built from.
        labels: Their labels.
        batch_size: The training batch size (any: the views do not depend
            on it).
        start_epoch: The first epoch of the dataset.
        start_batch: Batches of `start_epoch` to skip (the dataset is marked
            `keras_unikd.data.resumable`, so `Distiller.fit` with a
            `keras_unikd.callbacks.StepBackup` starts it at any batch itself).
        two_views: Whether the batches hold `(weak, strong)` views; `None`
            (default): as many views as the cache holds. `False` with a
            two-view cache gives its weak views alone (they do not depend
            on `two_views`).
        drop_remainder: As in `make_keyed_image_pipeline`.
        num_parallel_calls: As in `make_keyed_image_pipeline`.
        with_example_index: Whether the inputs also carry each example's
            row in `images`, `"example_index"` (int32 `(batch,)`), for
            terms that read it (CRD): `({"inputs": x, "cached_teacher":
            outputs, "example_index": index}, labels)`.

    Returns:
        A `tf.data.Dataset` of `({"inputs": x, "cached_teacher": outputs},
        labels)` (with `"example_index"` too when asked for).

    Raises:
        ValueError: If `cache` is not a `TeacherCache`, `images` or
            `labels` are not those of the cache, or `two_views=True` with
            a one-view cache (or an option is bad, as in
            `make_keyed_image_pipeline`).

    Example:

    >>> import keras, numpy as np, tempfile
    >>> from keras_unikd import terms
    >>> from keras_unikd.cache import build_teacher_cache
    >>> teacher = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                             keras.layers.Dense(3)])
    >>> x = np.arange(5 * 16, dtype="uint8").reshape(5, 4, 4, 1)
    >>> y = np.array([0, 1, 2, 0, 1])
    >>> cache = build_teacher_cache(tempfile.mkdtemp(), teacher, [terms.KD()], x, y,
    ...                             seed=0, epochs=2, augment=True, verbose=0)
    >>> batches = cached_teacher_pipeline(cache, x, y, batch_size=4)
    >>> inputs, labels = next(iter(batches))
    >>> tuple(inputs["inputs"].shape), tuple(inputs["cached_teacher"]["weak"]["logits"].shape)
    ((4, 4, 4, 1), (4, 3))
    >>> len(batches)  # 2 epochs of 2 batches
    4
    """
    import tensorflow as tf

    from keras_unikd.data.keyed import make_keyed_image_pipeline
    from keras_unikd.data.resume import resumable

    fn = "cached_teacher_pipeline"
    if not isinstance(cache, TeacherCache):
        raise ValueError(
            f"{fn}: `cache` must be a TeacherCache (from open_teacher_cache or "
            f"build_teacher_cache); got {type(cache).__name__}."
        )
    views = _views(cache, two_views, fn)
    check_bool("with_example_index", with_example_index, fn=fn)
    images, labels = mf.training_arrays(images, labels, fn)
    if mf.dataset_fingerprint(images, labels) != cache.manifest["dataset"]:
        raise ValueError(
            f"{fn}: `images` and `labels` are not the training data the cache at "
            f"{cache.directory!r} was built from (shapes, dtypes or contents differ). "
            "Pass the same arrays as to open_teacher_cache."
        )
    specs = [spec for spec in cache.arrays if spec.view in views]

    def lookup(epochs, indices):
        outputs = cache.lookup(epochs, indices)
        return [_value(outputs, spec) for spec in specs]

    def attach(x, y, keys):
        arrays = tf.numpy_function(
            lookup, [keys["epoch"], keys["index"]], [tf.float32] * len(specs), stateful=False
        )
        outputs = {view: {"features": {}} for view in views}
        for spec, array in zip(specs, arrays):
            array.set_shape((None, spec.width))
            if spec.output == mf.LOGITS:
                outputs[spec.view]["logits"] = array
            else:
                outputs[spec.view]["features"][spec.path] = array
        inputs = {INPUTS: x, CACHED_TEACHER: outputs}
        if with_example_index:
            inputs[EXAMPLE_INDEX] = keys["index"]
        return inputs, y

    def batches(epoch, batch):
        keyed = make_keyed_image_pipeline(
            images,
            labels,
            batch_size,
            cache.manifest["seed"],
            cache.epochs,
            start_epoch=epoch,
            start_batch=batch,
            augmentation=cache.augmentation,
            two_views=len(views) == 2,
            with_keys=True,
            drop_remainder=drop_remainder,
            num_parallel_calls=num_parallel_calls,
        )
        return _data_sharded(keyed.map(attach).prefetch(tf.data.AUTOTUNE))

    return resumable(batches(start_epoch, start_batch), batches)


def _data_sharded(dataset):
    """`dataset` with the auto-shard policy `DATA`, stated (`AUTO` falls back to it
    for a source that reads no files): every worker of a
    `MultiWorkerMirroredStrategy` computes the same global batches and keeps
    its replicas' share of each, so the global batches are one device's."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _views(cache, two_views, fn):
    if two_views is None:
        two_views = len(cache.views) == 2
    check_bool("two_views", two_views, fn=fn)
    if two_views and len(cache.views) < 2:
        raise ValueError(
            f"{fn}: `two_views=True`, but the cache at {cache.directory!r} holds the weak "
            "view only. Build the cache with two_views=True (in a new directory)."
        )
    return VIEWS if two_views else VIEWS[:1]


def _value(outputs, spec):
    entry = outputs[spec.view]
    value = entry["logits"] if spec.output == mf.LOGITS else entry["features"][spec.path]
    return np.asarray(value, "float32")
