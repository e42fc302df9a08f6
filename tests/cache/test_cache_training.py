"""Training from a teacher-output cache (issue 12, parts 3 and 4).

A cached run and an online run of the same seed see the same views and give
the same loss terms and, after one epoch of `fit`, the same students, on
every backend: KD, DKD and UniKD (AFF on the student side, FDP heads) in one
single-view Distiller, MLKD with UniKD's terms on both views in a two-view
one (two Distillers per run, not eight, trained eagerly on 16 examples: the
CI budget). A float16 cache built under another Keras backend trains here
within a stated
tolerance; terms that need the teacher online and batches that lack what the
terms read are clear errors. (On several devices: tests/distiller/test_distributed.py.)

Tolerances: the cached outputs are the teacher's on batches of 16 examples
(both views of 8 in one pass), an online step's on 8 (one view) or 16 (two):
the same values to float32 rounding (about 1e-7 relative), which a loss can
amplify: DKD multiplies its KL by T^2 * beta = 128, so its term differs by
up to 2.6e-5 relative (2.4e-6 absolute) under TensorFlow, the others by at
most 2.5e-6 relative (0 under PyTorch). Hence loss terms within rtol 1e-5
plus atol 1e-5, students after an epoch within 1e-6 (measured: 1e-7). A
float16 cache rounds the teacher's outputs to 11 bits: loss terms measured
within 1.2e-4 relative, students within 7.5e-6.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_unikd
from conftest import make_network
from conftest import random_uint8_images
from conftest import teacher_with_batch_statistics
from keras_unikd import cache as tc
from keras_unikd import terms
from keras_unikd.data.keyed import make_keyed_image_pipeline
from keras_unikd.heads import ModelLogits

SHAPE = (8, 8, 3)
NUM = 16
BATCH = 8  # the training's (2 steps an epoch); the caches are built with batches of 16
SEED = 3
OPTIONS = {"augment": True, "crop_padding": 2, "mean": [0.5, 0.4, 0.3], "std": 0.25}
TAP = "t_stage1_preact"

LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-5  # float32 cache: loss terms, cached vs online
WEIGHT_ATOL = 1e-6  # float32 cache: student weights after one epoch
FLOAT16_LOSS_RTOL = 5e-4  # float16 cache (plus LOSS_ATOL)
FLOAT16_WEIGHT_ATOL = 5e-5

# The exactness runs are eager (a few steps of tiny networks: cheaper than
# tracing four Distillers, under JAX no dearer than compiling them); the float16
# run is compiled on every backend, so a compiled step trains from cached
# batches too.
TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data code, the same under every Keras backend: TensorFlow pass",
)


def distillation_terms(two_views):
    """KD, DKD and UniKD (AFF over 3 student stages, FDP heads) on one view;
    MLKD and UniKD's terms (FDP heads) on two."""
    if two_views:
        return [
            terms.CrossEntropy(views=2),
            terms.MLKD(temperatures=(4.0, 2.0)),  # 2 of 5: a smaller step to compile
            terms.UniKDFeatures([TAP], ["s_pool"], seed=0, views=2),
        ]
    return [
        terms.CrossEntropy(),
        terms.KD(),
        terms.DKD(warmup_epochs=0),
        terms.UniKDFeatures([TAP], ["s_stage1", "s_stage2", "s_pool"], seed=0),
    ]


@pytest.fixture(scope="module")
def data():
    return random_uint8_images(NUM, SHAPE)


@pytest.fixture(scope="module")
def teacher():
    return teacher_with_batch_statistics(SHAPE)


def other_backend():
    """The backend the foreign cache is built under: the cheapest other one (a
    build under JAX compiles the teacher: 21 CPU-s, PyTorch 15, TensorFlow 12)."""
    return "torch" if keras.backend.backend() == "tensorflow" else "tensorflow"


_FOREIGN_BUILD = """
import sys
import numpy as np
import keras
from keras_unikd import cache as tc, terms
directory, model, arrays = sys.argv[1:]
data = np.load(arrays)
tc.build_teacher_cache(
    directory, keras.saving.load_model(model),
    [terms.DKD(), terms.UniKDFeatures([%r], ["s"])], data["images"], data["labels"],
    seed=%d, epochs=1, batch_size=16, dtype="float16", verbose=0, **%r)
""" % (TAP, SEED, OPTIONS)


@pytest.fixture(scope="module")
def foreign_build(tmp_path_factory, teacher, data):
    """A float16 cache built by a process under the next backend: started first
    (it builds while the other tests run), read last."""
    root = tmp_path_factory.mktemp("foreign")
    model, arrays = str(root / "teacher.keras"), str(root / "data.npz")
    teacher.save(model)
    np.savez(arrays, images=data[0], labels=data[1])
    env = dict(os.environ, KERAS_BACKEND=other_backend(), TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-c", _FOREIGN_BUILD, str(root / "cache"), model, arrays],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield str(root / "cache"), process
    process.kill()
    process.communicate()


def materialize(dataset):
    """The batches of a dataset as NumPy nests."""
    return [keras.tree.map_structure(lambda t: t.numpy(), element) for element in dataset]


def replay(batches):
    """A dataset of the given batches, cheap to make (nothing to trace)."""
    stacked = keras.tree.map_structure(lambda *arrays: np.stack(arrays), *batches)
    return tf.data.Dataset.from_tensor_slices(stacked)


def single_view(batches):
    """The weak half of two-view cached batches (the weak views do not depend on
    `two_views`: `test_cached_batches_are_the_keyed_pipelines` checks it)."""
    return [
        (
            {
                tc.INPUTS: x[tc.INPUTS][0],
                tc.CACHED_TEACHER: {"weak": x[tc.CACHED_TEACHER]["weak"]},
            },
            y,
        )
        for x, y in batches
    ]


def online(batches):
    """The same batches without the cached outputs: the teacher runs."""
    return [(x[tc.INPUTS], y) for x, y in batches]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, teacher, data, foreign_build):
    """A two-view float32 cache for both Distillers."""
    del foreign_build  # started first
    return tc.build_teacher_cache(
        str(tmp_path_factory.mktemp("cache")),
        teacher,
        distillation_terms(True) + distillation_terms(False),
        *data,
        seed=SEED,
        epochs=1,
        batch_size=16,
        two_views=True,
        verbose=0,
        **OPTIONS,
    )


@pytest.fixture(scope="module")
def cached_batches(cache, data):
    """The cache's batches (1 epoch), both views and the weak ones."""
    two = materialize(tc.cached_teacher_pipeline(cache, *data, BATCH))
    return {True: two, False: single_view(two)}


def distiller(teacher, two_views, eager=True):
    keras.utils.set_random_seed(1)  # the same student, heads and aggregators
    student = make_network(4, "s", input_shape=SHAPE)
    model = keras_unikd.Distiller(teacher, student, terms=distillation_terms(two_views))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), run_eagerly=eager)
    return model


class FirstStep(keras.callbacks.Callback):
    """Keeps the logs of the first training step: its loss terms."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.logs = {name: float(value) for name, value in logs.items()}


def run(teacher, two_views, batches, monkeypatch=None, eager=True):
    """The loss terms of the first step, those of an epoch of `fit` and the student after it.

    With `monkeypatch`, the batches are cached ones and the teacher must not run.
    """
    model = distiller(teacher, two_views, eager)
    if monkeypatch is not None:
        network_call = ModelLogits.__call__

        def fail(*args, **kwargs):
            raise AssertionError("the teacher ran on a cached batch")

        def student_only(self, *args, **kwargs):
            assert self.role == "student", "fit's first-batch check ran the teacher"
            return network_call(self, *args, **kwargs)

        monkeypatch.setattr(model.teacher_source, "_forward", fail)
        monkeypatch.setattr(ModelLogits, "__call__", student_only)
    first = FirstStep()
    history = model.fit(replay(batches), epochs=1, verbose=0, callbacks=[first]).history
    weights = [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.student.weights]
    return first.logs, {name: values[-1] for name, values in history.items()}, weights


@pytest.fixture(scope="module")
def online_runs(teacher, cached_batches):
    runs = {}

    def of(two_views):
        if two_views not in runs:
            runs[two_views] = run(teacher, two_views, online(cached_batches[two_views]))
        return runs[two_views]

    return of


def compare(cached, online_run, loss_rtol, weight_atol):
    """Asserts the tolerances; returns the largest relative loss-term difference
    and the largest absolute student weight difference."""
    report = {}
    for losses, reference in zip(cached[:2], online_run[:2]):
        assert losses.keys() == reference.keys()
        np.testing.assert_allclose(
            [losses[k] for k in reference], list(reference.values()), loss_rtol, LOSS_ATOL
        )
        for k in reference:
            report[k] = max(report.get(k, 0.0), abs(losses[k] - reference[k]) / abs(reference[k]))
    weight_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(cached[2], online_run[2]))
    assert weight_diff <= weight_atol
    print(f"loss terms, relative: { {k: float(f'{v:.2g}') for k, v in report.items()} }")
    print(f"student weights, absolute: {weight_diff:.2g}")
    return report, weight_diff


# --- exactness ----------------------------------------------------------------


@pytest.mark.parametrize("two_views", [False, True], ids=["kd_dkd_unikd", "mlkd_unikd"])
def test_cached_run_equals_online_run(two_views, teacher, cached_batches, online_runs, monkeypatch):
    reference = online_runs(two_views)
    cached = run(teacher, two_views, cached_batches[two_views], monkeypatch)
    compare(cached, reference, LOSS_RTOL, WEIGHT_ATOL)


@pytest.mark.parametrize("two_views", [False, True], ids=["kd_dkd_unikd", "mlkd_unikd"])
def test_a_distiller_without_the_teacher_model_trains_as_the_online_one(
    two_views, cache, cached_batches, online_runs, tmp_path
):
    """`Distiller(cache.teacher_source(), student, ...)`: no teacher model at all,
    the terms built from the shapes in the manifest; it saves and loads too."""
    reference = online_runs(two_views)
    source = cache.teacher_source()
    cached = run(source, two_views, cached_batches[two_views])
    compare(cached, reference, LOSS_RTOL, WEIGHT_ATOL)
    model = distiller(source, two_views)
    assert model.teacher is None
    path = str(tmp_path / "cached.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.teacher is None and loaded.teacher_source.feature_shapes == source.feature_shapes
    x, y = cached_batches[two_views][0]
    expected = model.compute_distillation_losses(x, y, training=False)[1]
    actual = loaded.compute_distillation_losses(x, y, training=False)[1]
    for key, value in expected.items():
        np.testing.assert_allclose(float(actual[key]), float(value), rtol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="carries no cached teacher outputs"):
        model.compute_distillation_losses(x[tc.INPUTS], y)


@TF_ONLY
def test_cached_batches_are_the_keyed_pipelines(cached_batches, data):
    """The views and labels of `make_keyed_image_pipeline` (whose one-view weak
    views are the two-view pipeline's)."""
    images, labels = data
    keyed = materialize(
        make_keyed_image_pipeline(images, labels, BATCH, SEED, 1, with_keys=True, **OPTIONS)
    )
    assert len(keyed) == len(cached_batches[False]) == NUM // BATCH
    for (x, y, _), (cached_x, cached_y) in zip(keyed, cached_batches[False]):
        np.testing.assert_array_equal(x, cached_x[tc.INPUTS])
        np.testing.assert_array_equal(y, cached_y)


def test_a_float16_cache_built_under_another_backend_trains_here(
    teacher, data, foreign_build, cached_batches, online_runs, monkeypatch
):
    directory, process = foreign_build
    output = process.communicate(timeout=600)[0].decode(errors="replace")
    assert process.returncode == 0, output
    cache = tc.open_teacher_cache(
        directory, teacher, distillation_terms(False), *data, seed=SEED, epochs=1, **OPTIONS
    )
    assert cache.manifest["versions"]["backend"] == other_backend()
    assert cache.dtype == "float16"
    with pytest.raises(ValueError, match="holds the weak view only"):
        tc.cached_teacher_pipeline(cache, *data, BATCH, two_views=True)
    batches = materialize(tc.cached_teacher_pipeline(cache, *data, BATCH))
    for (x, _), (x32, _) in zip(batches, cached_batches[False]):
        np.testing.assert_array_equal(x[tc.INPUTS], x32[tc.INPUTS])
        keras.tree.map_structure(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
            x[tc.CACHED_TEACHER],
            x32[tc.CACHED_TEACHER],
        )
    reference = online_runs(False)
    cached = run(teacher, False, batches, monkeypatch, eager=False)
    compare(cached, reference, FLOAT16_LOSS_RTOL, FLOAT16_WEIGHT_ATOL)


# --- what cannot train from a cache --------------------------------------------


@pytest.mark.parametrize(
    "make_terms, words",
    [
        (lambda: [terms.FitNetHint("t_stage2", "s_stage2")], "'hint'.*full feature map"),
        (
            lambda: [terms.UniKDFeatures(["t_stage1", "t_stage2"], ["s_stage1"])],
            "'unikd'.*MultiStageAggregator",
        ),
        (lambda: [terms.UniKDFeatures("auto", ["s_stage1"])], "'unikd'.*'auto'"),
    ],
    ids=["fitnet", "teacher_aggregator", "auto"],
)
def test_terms_that_need_the_teacher_online_refuse_cached_batches(
    make_terms, words, teacher, cached_batches
):
    keras.utils.set_random_seed(1)
    student = make_network(4, "s", input_shape=SHAPE)
    model = keras_unikd.Distiller(teacher, student, terms=[terms.KD(), *make_terms()])
    assert not model.teacher_needs.cacheable
    x, y = cached_batches[False][0]
    with pytest.raises(ValueError, match=f"cannot train from a teacher cache: term {words}"):
        model.compute_distillation_losses(x, y)
    model.compute_distillation_losses(x[tc.INPUTS], y)  # online: fine


def test_cached_batches_that_lack_what_the_terms_read(teacher, cached_batches):
    x, y = cached_batches[False][0]
    mlkd = distiller(teacher, True)
    with pytest.raises(ValueError, match="read 2 views.*two_views=True"):
        mlkd.compute_distillation_losses(x, y)
    two_x, two_y = cached_batches[True][0]
    weak_only = {"weak": two_x[tc.CACHED_TEACHER]["weak"]}
    with pytest.raises(ValueError, match="lack the strong view"):
        mlkd.compute_distillation_losses(
            {tc.INPUTS: two_x[tc.INPUTS], tc.CACHED_TEACHER: weak_only}, two_y
        )
    unikd = distiller(teacher, False)
    no_pooled = {"weak": {"logits": x[tc.CACHED_TEACHER]["weak"]["logits"]}}
    with pytest.raises(ValueError, match=f"lack the pooled feature of teacher layer '{TAP}'"):
        unikd.compute_distillation_losses(
            {tc.INPUTS: x[tc.INPUTS], tc.CACHED_TEACHER: no_pooled}, y
        )
    narrow = {"weak": {"logits": x[tc.CACHED_TEACHER]["weak"]["logits"][:, :3]}}
    with pytest.raises(ValueError, match="3 classes, the networks 5"):
        unikd.compute_distillation_losses({tc.INPUTS: x[tc.INPUTS], tc.CACHED_TEACHER: narrow}, y)


def test_a_student_whose_inputs_look_like_a_cached_batch():
    def network(name):
        a, b = keras.Input((3,), name="inputs"), keras.Input((3,), name="cached_teacher")
        x = keras.layers.Concatenate()([a, b])
        return keras.Model({"inputs": a, "cached_teacher": b}, keras.layers.Dense(4)(x), name=name)

    teacher = network("t")
    with pytest.raises(ValueError, match="Rename either input"):
        keras_unikd.Distiller(teacher, network("s"), terms=[terms.KD()])


@TF_ONLY
def test_every_worker_keeps_its_share_of_the_global_batches(cache, data):
    """The DATA auto-shard policy, stated (not left to AUTO, which would shard by
    file if the source read files): under MultiWorkerMirroredStrategy each worker
    keeps its replicas' share of the same keyed global batches. Training on two
    workers: tests/distiller/test_distributed.py."""
    from keras_unikd.data.resume import RESTART_ATTRIBUTE

    batches = tc.cached_teacher_pipeline(cache, *data, BATCH)
    restarted = getattr(batches, RESTART_ATTRIBUTE)(0, 1)
    for dataset in (batches, restarted):
        policy = dataset.options().experimental_distribute.auto_shard_policy
        assert policy == tf.data.experimental.AutoShardPolicy.DATA


@TF_ONLY
def test_pipeline_argument_errors(cache, data):
    images, labels = data
    with pytest.raises(ValueError, match="must be a TeacherCache"):
        tc.cached_teacher_pipeline(cache.directory, images, labels, BATCH)
    with pytest.raises(ValueError, match="not the training data"):
        tc.cached_teacher_pipeline(cache, images, (labels + 1) % 5, BATCH)
    with pytest.raises(ValueError, match="`two_views` must be"):
        tc.cached_teacher_pipeline(cache, images, labels, BATCH, two_views=2)
