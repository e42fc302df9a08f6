"""A teacher cache built in shards (issue 23): the files of a one-process
build byte for byte, an interrupted shard resumes, and bad or conflicting
shards are clear errors."""

import filecmp
import json
import os
import shutil

import keras
import numpy as np
import pytest

from conftest import make_network
from conftest import random_uint8_images
from conftest import teacher_with_batch_statistics
from keras_unikd import cache as tc
from keras_unikd import terms
from keras_unikd.cache import build as cache_build
from keras_unikd.cache import manifest as cache_manifest
from keras_unikd.cache.shards import shard_status

# Which epochs a shard builds, its progress files and the merge are the same
# NumPy and file code under every backend (the teacher's pass is tested on
# every backend in test_cache_build_and_open.py).
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="backend-independent file handling: TensorFlow pass",
)

SHAPE = (8, 8, 3)
NUM = 7  # two batches of 4, the second partial
EPOCHS = 3  # shard 0 of 2 builds epochs 0 and 2, shard 1 epoch 1
OPTIONS = {"augment": True, "crop_padding": 2}  # one view: the cheapest pipeline
TAP = "t_stage1_preact"
# What differs between a sharded and a one-process manifest: timings (and
# the batch size and versions of the shard that wrote the manifest).
TIMING = ("build_seconds",)


def distillation_terms():
    return [terms.KD(), terms.UniKDFeatures([TAP], ["s_stage1"])]


@pytest.fixture(scope="module")
def data():
    return random_uint8_images(NUM, SHAPE)


@pytest.fixture(scope="module")
def teacher():
    return teacher_with_batch_statistics(SHAPE)


def build(directory, teacher, data, shard=None, epochs=EPOCHS):
    return tc.build_teacher_cache(
        str(directory), teacher, distillation_terms(), *data, seed=2, epochs=epochs,
        batch_size=4, shard=shard, verbose=0, **OPTIONS,
    )  # fmt: skip


def open_cache(directory, teacher, data, epochs=EPOCHS):
    return tc.open_teacher_cache(
        str(directory), teacher, distillation_terms(), *data, seed=2, epochs=epochs, **OPTIONS
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, teacher, data):
    """A one-process build of the cache."""
    directory = tmp_path_factory.mktemp("one_process")
    build(directory, teacher, data)
    return directory


def files(directory):
    return sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, _, names in os.walk(directory)
        for name in names
    )


def manifest(directory):
    with open(os.path.join(directory, cache_manifest.MANIFEST)) as file:
        return json.load(file)


def assert_same_cache(directory, reference):
    """Every file of a one-process build, the arrays byte for byte, the
    manifest but for its timings."""
    assert files(directory) == files(reference)
    arrays = [name for name in files(reference) if name.endswith(".npy")]
    assert len(arrays) == EPOCHS * 2  # logits, pooled feature
    for name in arrays:
        assert filecmp.cmp(directory / name, reference / name, shallow=False), name
    built, one = manifest(directory), manifest(reference)
    assert built["build_seconds"].keys() == one["build_seconds"].keys()
    for key in TIMING:
        built.pop(key), one.pop(key)
    assert built == one


def test_shards_build_the_files_of_a_one_process_build(tmp_path, reference, teacher, data):
    directory = tmp_path / "sharded"
    assert build(directory, teacher, data, shard=(1, 2)) is None
    assert files(directory) == [
        "epoch_0001/weak.logits.npy", "epoch_0001/weak.pooled_0.npy", "manifest.json",
        "shard-1-of-2.json",
    ]  # fmt: skip
    assert shard_status(directory) == {(0, 2): [0, 2]}
    with pytest.raises(
        ValueError,
        match=r"built in shards, and these have not finished: shard 0 of 2 \(epochs 0, 2 "
        r"missing\).*build_teacher_cache\(\.\.\., shard=\(0, 2\)\) \(keras-unikd "
        r"cache-teacher \.\.\. --shard 0 --num-shards 2\)",
    ):
        open_cache(directory, teacher, data)
    # Shard 0 on a machine of its own, its directory then copied in.
    elsewhere = tmp_path / "elsewhere"
    assert build(elsewhere, teacher, data, shard=(0, 2)) is None
    assert shard_status(elsewhere) == {(1, 2): [1]}
    shutil.copytree(elsewhere, directory, dirs_exist_ok=True)
    assert open_cache(directory, teacher, data).manifest["epochs_complete"] == [0, 1, 2]
    cache = build(directory, teacher, data, shard=(0, 2))  # computes nothing, merges
    assert cache.epochs == EPOCHS and shard_status(directory) == {}
    assert_same_cache(directory, reference)

    # Training batches from either cache carry the same teacher outputs.
    pipelines = [
        tc.cached_teacher_pipeline(open_cache(folder, teacher, data), *data, batch_size=5)
        for folder in (directory, reference)
    ]
    count = 0
    for (sharded, _), (one, _) in zip(*pipelines):
        for got, want in zip(
            keras.tree.flatten(sharded["cached_teacher"]), keras.tree.flatten(one["cached_teacher"])
        ):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        count += 1
    assert count == EPOCHS * 2


def test_an_interrupted_shard_resumes(tmp_path, monkeypatch, reference, teacher, data):
    real = cache_build._EpochWriter.write
    calls = []

    def interrupted(writer, epoch, batches):
        calls.append(epoch)
        if epoch == 2:  # killed after the first batch: a half-written epoch

            def first_then_stop(epoch_batches):
                yield next(iter(epoch_batches))
                raise KeyboardInterrupt

            batches = first_then_stop(batches)
        return real(writer, epoch, batches)

    monkeypatch.setattr(cache_build._EpochWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, teacher, data, shard=(0, 2))
    with open(tmp_path / "shard-0-of-2.json") as file:
        assert json.load(file)["epochs_complete"] == [0]
    assert manifest(tmp_path)["epochs_complete"] == []
    assert shard_status(tmp_path) == {(0, 2): [2], (1, 2): [1]}
    open_cache(tmp_path, teacher, data, epochs=1)  # epoch 0 is usable
    with pytest.raises(ValueError, match=r"shard 0 of 2 \(epoch 2 missing\), shard 1 of 2"):
        open_cache(tmp_path, teacher, data)

    calls.clear()
    monkeypatch.setattr(cache_build._EpochWriter, "write", lambda writer, epoch, batches: (
        calls.append(epoch), real(writer, epoch, batches)))  # fmt: skip
    os.remove(tmp_path / "epoch_0000" / "weak.logits.npy")  # a damaged finished epoch
    with pytest.warns(UserWarning, match="Epoch 0 is computed again"):
        assert build(tmp_path, teacher, data, shard=(0, 2)) is None
    assert calls == [0, 2]  # the damaged epoch and the unfinished one
    assert build(tmp_path, teacher, data, shard=(1, 2)).epochs == EPOCHS
    assert calls == [0, 2, 1]
    assert_same_cache(tmp_path, reference)
    # Rerunning a shard of a finished cache computes nothing.
    assert build(tmp_path, teacher, data, shard=(0, 2)).epochs == EPOCHS
    assert calls == [0, 2, 1] and "shard-0-of-2.json" not in os.listdir(tmp_path)


@pytest.mark.parametrize(
    "shard, words",
    [
        ((2, 2), r"`shard index` must be an integer >= 0 and below 2; got 2\. The shards of "
                 r"2 are numbered 0 \.\. 1"),
        ((-1, 2), r"`shard index` must be an integer >= 0 and below 2; got -1"),
        ((0, 0), r"`num_shards` must be a positive integer; got 0"),
        ((0, 1.5), r"`num_shards` must be a positive integer; got 1\.5"),
        (1, r"`shard` must be None or \(index, num_shards\), e\.g\. \(0, 2\)"),
        ((0, 1, 2), r"`shard` must be None or \(index, num_shards\)"),
    ],
)
def test_bad_shard_arguments(tmp_path, teacher, data, shard, words):
    with pytest.raises(ValueError, match="build_teacher_cache: " + words):
        build(tmp_path / "cache", teacher, data, shard=shard)
    assert not (tmp_path / "cache").exists()


def test_conflicting_shards_are_refused(tmp_path, teacher, data):
    assert build(tmp_path, teacher, data, shard=(0, 2), epochs=2) is None  # epoch 0
    # Another split, or one process, could write the epoch shard 1 of 2 writes.
    with pytest.raises(
        ValueError,
        match=r"these have not finished: shard 1 of 2 \(epoch 1 missing\); shards of 3 could "
        r"write .*shard=\(1, 2\).*delete their shard-\*\.json files",
    ):
        build(tmp_path, teacher, data, shard=(0, 3), epochs=2)
    with pytest.raises(ValueError, match="; a one-process build could write"):
        build(tmp_path, teacher, data, epochs=2)
    keras.utils.set_random_seed(1)
    with pytest.raises(ValueError, match="other teacher weights"):
        build(tmp_path, make_network(8, "t", input_shape=SHAPE), data, shard=(1, 2), epochs=2)
    # A shard under another TensorFlow than the cache was started with warns.
    started = manifest(tmp_path)
    started["versions"]["tensorflow"] = "0.0"
    cache_manifest.write_manifest(str(tmp_path), started)
    with pytest.warns(UserWarning, match="built with TensorFlow 0.0"):
        cache = build(tmp_path, teacher, data, shard=(1, 2), epochs=2)
    assert cache.epochs == 2 and manifest(tmp_path)["epochs_complete"] == [0, 1]
    assert shard_status(tmp_path) == {} and files(tmp_path)[-1] == "manifest.json"


def test_a_shard_file_of_another_cache_is_refused(tmp_path, teacher, data):
    build(tmp_path, teacher, data, shard=(0, 1), epochs=1)
    path = tmp_path / "shard-1-of-2.json"
    record = {"cache": "0" * 16, "epochs": 2, "epochs_complete": [1], "build_seconds": {}}
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"shard-1-of-2\.json' records a shard of another"):
        open_cache(tmp_path, teacher, data, epochs=1)
    path.write_text(json.dumps({"epochs": 2}))
    with pytest.raises(ValueError, match=r"shard-1-of-2\.json' is not a shard progress file"):
        shard_status(tmp_path)
    path.write_text("{")
    with pytest.raises(ValueError, match=r"shard-1-of-2\.json' cannot be read .*Delete it"):
        shard_status(tmp_path)
