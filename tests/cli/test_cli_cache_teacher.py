"""`keras-unikd cache-teacher` on mocked CIFAR-100 (tfds.testing.mock_data)."""

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_unikd import cache as tc
from keras_unikd import cli
from keras_unikd import presets
from keras_unikd.data.cifar100 import cifar100_train_arrays
from keras_unikd.data.keyed import CIFAR100_KEYED_OPTIONS
from keras_unikd.data.keyed import keyed_views
from keras_unikd.teacher_source import OnlineTeacher

PRESET = "cifar100_vgg13_vgg8"  # The fewest layers: the cheapest to run.
TAKE = 6
ARGS = ["--preset", PRESET, "--epochs", "1", "--take", str(TAKE), "--batch-size", "4",
        "--verbose", "0", "--seed", "5"]


def mocked(function, *args, **kwargs):
    with tfds.testing.mock_data(num_examples=TAKE):
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A random teacher of the preset, saved as the CLI reads it."""
    keras.utils.set_random_seed(0)
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.keras")
    presets.build_model(PRESET, "teacher").save(path)
    return path


def test_cache_teacher_builds_the_cache_of_the_presets_distiller(teacher_file, tmp_path, capsys):
    directory = str(tmp_path / "cache")
    argv = ["cache-teacher", *ARGS, "--method", "unikd", "--teacher", teacher_file,
            "--cache-dir", directory, "--dtype", "float16"]
    assert mocked(cli.main, argv) == 0
    out = capsys.readouterr().out
    assert f"teacher cache at {directory}: " in out and " MiB on disk, built in " in out

    # The cache is the one `distill --method unikd` trains from: UniKD's pooled
    # teacher feature and the logits of the keyed CIFAR-100 views of seed 5.
    teacher = keras.models.load_model(teacher_file, compile=False)
    student = presets.build_model(PRESET, "student")
    needs = presets.build_distiller(PRESET, teacher, student, "unikd").teacher_needs
    assert needs.pooled_features
    images, labels = mocked(cifar100_train_arrays)
    cache = tc.open_teacher_cache(
        directory, teacher, needs, images, labels, seed=5, epochs=1, **CIFAR100_KEYED_OPTIONS
    )
    assert (cache.dtype, cache.views, cache.pooled_features) == (
        "float16", ("weak",), needs.pooled_features
    )
    views = keyed_views(images, 5, 0, [0, 5], **CIFAR100_KEYED_OPTIONS)
    logits = cache.lookup([0, 0], [0, 5])["weak"]["logits"]
    expected = keras.ops.convert_to_numpy(teacher(views, training=False))
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "method, words",
    [
        ("fitnet", "--method fitnet cannot be trained from a teacher cache: term 'hint' "
                   "(FitNetHint) matches the teacher's full feature map"),
        ("student", "--method student trains the student alone"),
    ],
)
def test_cache_teacher_refuses_what_cannot_be_cached(teacher_file, tmp_path, capsys, method, words):
    argv = ["cache-teacher", *ARGS, "--method", method, "--teacher", teacher_file,
            "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_cache_teacher_needs_a_teacher_file(tmp_path, capsys):
    argv = ["cache-teacher", *ARGS, "--teacher", str(tmp_path / "none.keras"),
            "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def kd_cache(teacher_file, tmp_path_factory):
    """A two-epoch cache of `distill --method kd`'s teacher outputs (seed 5)."""
    directory = str(tmp_path_factory.mktemp("kd_cache") / "cache")
    argv = ["cache-teacher", *ARGS, "--epochs", "2", "--method", "kd", "--teacher",
            teacher_file, "--cache-dir", directory]
    assert mocked(cli.main, argv) == 0
    return directory


def test_distill_trains_from_the_cache_and_resumes_at_the_right_epoch(
    teacher_file, kd_cache, tmp_path, capsys, monkeypatch
):
    import csv
    import json


    def teacher_ran(*args, **kwargs):
        raise AssertionError("the teacher ran on a cached batch")

    monkeypatch.setattr(OnlineTeacher, "_forward", teacher_ran)
    output = str(tmp_path / "runs")
    argv = ["distill", *ARGS, "--method", "kd", "--teacher", teacher_file,
            "--teacher-cache", kd_cache, "--output-dir", output]
    assert mocked(cli.main, argv) == 0  # epoch 0 of 1
    assert "resuming" not in capsys.readouterr().out
    # Resumed without --teacher: the teacher model is never loaded.
    no_teacher = [a for a in argv if a not in ("--teacher", teacher_file)]

    def loaded(path):
        raise AssertionError(f"the teacher model {path} was loaded")

    with monkeypatch.context() as patch:
        patch.setattr(cli.common, "load_teacher", loaded)
        assert mocked(cli.main, [*no_teacher, "--epochs", "2"]) == 0  # the backup holds epoch 0
    assert "(keyed seed 5, resuming at epoch 1)" in capsys.readouterr().out
    run_dir = tmp_path / "runs" / "kd"
    with open(run_dir / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert all(float(row["kd_loss"]) >= 0 for row in rows)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["teacher_cache"] == kd_cache and results["epochs"] == 2
    assert results["teacher_path"] is None
    # A third epoch is not in the cache: a clear error, no training.
    assert mocked(cli.main, [*argv, "--epochs", "3"]) == 2
    assert "--teacher-cache: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--method", "student"], "--method student trains the student alone"),
        (["--method", "kd", "--seed", "6"], "other seed (cache 5, now 6)"),
        (["--method", "unikd"], "lacks the pooled teacher feature"),
    ],
)
def test_distill_refuses_a_cache_that_is_not_its_own(
    teacher_file, kd_cache, tmp_path, capsys, extra, words
):
    argv = ["distill", *ARGS, "--teacher", teacher_file, "--teacher-cache", kd_cache,
            "--output-dir", str(tmp_path), *extra]
    assert mocked(cli.main, argv) == 2
    assert words in capsys.readouterr().err


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the shards' file handling is backend-independent: TensorFlow pass",
)
def test_cache_teacher_in_shards_builds_the_one_process_cache(
    teacher_file, kd_cache, tmp_path, capsys
):
    import filecmp
    import os

    directory = tmp_path / "sharded"
    argv = ["cache-teacher", *ARGS, "--epochs", "2", "--method", "kd", "--teacher",
            teacher_file, "--cache-dir", str(directory)]
    assert mocked(cli.main, [*argv, "--shard", "1", "--num-shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "seed 5, shard 1 of 2; writing" in out
    assert "still to finish: shard 0 of 2 (epoch 0 missing)" in out
    assert mocked(cli.main, [*argv, "--shard", "0", "--num-shards", "2"]) == 0
    assert " MiB on disk, built in " in capsys.readouterr().out
    names = sorted(os.listdir(directory))
    assert names == sorted(os.listdir(kd_cache)) == ["epoch_0000", "epoch_0001", "manifest.json"]
    for epoch in names[:2]:
        match, mismatch, errors = filecmp.cmpfiles(
            directory / epoch, os.path.join(kd_cache, epoch), ["weak.logits.npy"], shallow=False
        )
        assert match == ["weak.logits.npy"], (mismatch, errors)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--shard", "2", "--num-shards", "2"], "--shard must lie in 0 .. --num-shards - 1"),
        (["--shard", "0", "--num-shards", "0"], "--num-shards be at least 1"),
        (["--shard", "1"], "--shard and --num-shards go together"),
    ],
)
def test_cache_teacher_refuses_bad_shards(teacher_file, tmp_path, capsys, extra, words):
    argv = ["cache-teacher", *ARGS, "--method", "kd", "--teacher", teacher_file,
            "--cache-dir", str(tmp_path / "cache"), *extra]
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="--strategy mirrored is tf.distribute's (TensorFlow backend)",
)
def test_distill_trains_from_the_cache_under_a_mirrored_strategy(kd_cache, tmp_path):
    """Two replicas train as one device: tests/distiller/test_distributed.py."""
    import json

    argv = ["distill", *ARGS, "--method", "kd", "--teacher-cache", kd_cache,
            "--strategy", "mirrored", "--output-dir", str(tmp_path)]
    assert mocked(cli.main, argv) == 0
    results = json.loads((tmp_path / "kd" / "results.json").read_text())
    assert (results["strategy"], results["teacher_cache"]) == ("mirrored", kd_cache)
    assert results["teacher_path"] is None and results["epochs_completed"] == 1
