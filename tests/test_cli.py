"""`keras-unikd` end to end on mocked CIFAR-100 (tfds.testing.mock_data)."""

import csv
import importlib.util
import json
import os

import keras
import pytest
import tensorflow_datasets as tfds

from keras_unikd import cli
from keras_unikd import presets
from keras_unikd.callbacks import StudentCheckpoint

BACKEND = keras.backend.backend()
OTHER_BACKEND = "jax" if BACKEND == "tensorflow" else "tensorflow"
PRESET = "cifar100_vgg13_vgg8"  # The fewest layers: the cheapest to compile.
SMOKE = [
    "--preset", PRESET, "--epochs", "1", "--take", "8", "--batch-size", "4",
    "--verbose", "0", "--seed", "0",
]
RESULT_KEYS = {
    "preset", "method", "epochs", "backend", "best_top1", "last_top1",
    "best_epoch", "seconds_per_epoch", "epochs_completed", "published_top1",
}


def run(argv):
    with tfds.testing.mock_data(num_examples=8):
        return cli.main(argv)


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_run_dir(run_dir, model_name, loss_terms, epochs=1):
    backup = os.path.join(run_dir, "backup")
    assert os.path.isdir(backup) and os.listdir(backup)
    rows = read_log(os.path.join(run_dir, "log.csv"))
    assert len(rows) == epochs
    columns = set(rows[0])
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"} <= columns
    assert set(loss_terms) <= columns, columns
    for kind in ("best", "last"):
        model = keras.models.load_model(os.path.join(run_dir, f"{kind}_{model_name}.keras"))
        assert model.outputs[0].shape[-1] == 100
    if importlib.util.find_spec("tensorboard") is not None:
        assert os.listdir(os.path.join(run_dir, "tensorboard"))
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    assert RESULT_KEYS <= set(results)
    assert results["backend"] == BACKEND and results["epochs_completed"] == epochs
    assert 0.0 <= results["best_top1"] <= 100.0
    # The best network is StudentCheckpoint's: its record beside it, no
    # temporary file left; results.json reports that network.
    best = read_best_record(run_dir, model_name)
    assert (best["monitor"], best["mode"]) == ("val_accuracy", "max")
    assert results["best_model"] == os.path.join(run_dir, f"best_{model_name}.keras")
    assert results["best_top1"] == round(100.0 * best["best"], 4)
    assert results["best_epoch"] == best["epoch"]
    assert sorted(name for name in os.listdir(run_dir) if name.startswith((".", "best"))) == [
        f"best_{model_name}.keras", f"best_{model_name}.keras.json",
    ]
    return results


def read_best_record(run_dir, model_name):
    with open(os.path.join(run_dir, f"best_{model_name}.keras.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("runs"))
    assert run(["train-teacher", *SMOKE, "--output-dir", output]) == 0
    return output


def test_list_presets(capsys):
    assert cli.main(["list-presets"]) == 0
    out = capsys.readouterr().out
    for name in presets.list_presets():
        assert name in out
    assert cli.main(["list-presets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listed] == presets.list_presets()


def test_unknown_preset_lists_presets(capsys, tmp_path):
    assert cli.main(["distill", "--preset", "nope", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Unknown preset 'nope'" in err and PRESET in err


def test_missing_teacher_says_how_to_train_it(capsys, tmp_path):
    argv = ["distill", "--preset", PRESET, "--output-dir", str(tmp_path), "--take", "8"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert f"keras-unikd train-teacher --preset {PRESET} --output-dir {tmp_path} --take 8" in err


def test_train_teacher_then_distill(trained_teacher):
    teacher_dir = os.path.join(trained_teacher, "teacher")
    results = check_run_dir(teacher_dir, "teacher", [])
    assert results["method"] == "teacher" and results["published_top1"] == 74.64

    assert run(["distill", *SMOKE, "--method", "unikd", "--output-dir", trained_teacher]) == 0
    run_dir = os.path.join(trained_teacher, "unikd")
    results = check_run_dir(
        run_dir, "student", ["ce_loss", "dkd_loss", "feature_loss", "consistency_loss"]
    )
    assert results["method"] == "unikd" and results["teacher_path"].endswith("best_teacher.keras")
    assert results["preset_config"]["dkd_beta"] == 6.0

    # In one run, the best is the log's best epoch.
    rows = read_log(os.path.join(run_dir, "log.csv"))
    assert results["best_top1"] == round(100.0 * float(rows[0]["val_accuracy"]), 4)

    # Running again with more epochs resumes from the backup: one more row.
    # The resumed run keeps the best so far: given one no epoch can beat
    # (a strictly better val_accuracy than 1.0), it leaves the file alone.
    best_path = os.path.join(run_dir, "best_student.keras")
    record = dict(read_best_record(run_dir, "student"), best=1.0)
    with open(best_path + ".json", "w") as f:
        json.dump(record, f)
    with open(best_path, "rb") as f:
        best_bytes = f.read()
    resumed = [a if a != "1" else "2" for a in SMOKE]
    assert run(["distill", *resumed, "--method", "unikd", "--output-dir", trained_teacher]) == 0
    rows = read_log(os.path.join(run_dir, "log.csv"))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert read_best_record(run_dir, "student") == record
    with open(best_path, "rb") as f:
        assert f.read() == best_bytes
    results = check_run_dir(
        run_dir, "student", ["ce_loss", "dkd_loss", "feature_loss", "consistency_loss"], epochs=2
    )
    assert (results["best_top1"], results["best_epoch"]) == (100.0, 1)


def test_distill_student_alone_needs_no_teacher(tmp_path, monkeypatch):
    # The bare student's best is saved by StudentCheckpoint too.
    saves = []
    on_epoch_end = StudentCheckpoint.on_epoch_end

    def spy(self, epoch, logs=None):
        saves.append(self.filepath)
        on_epoch_end(self, epoch, logs)

    monkeypatch.setattr(StudentCheckpoint, "on_epoch_end", spy)
    assert run(["distill", *SMOKE, "--method", "student", "--output-dir", str(tmp_path)]) == 0
    run_dir = os.path.join(tmp_path, "student")
    assert saves == [os.path.join(run_dir, "best_student.keras")]
    results = check_run_dir(run_dir, "student", [])
    assert results["published_top1"] == 70.36
    assert read_best_record(run_dir, "student")["epoch"] == 1


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="tf.distribute.MirroredStrategy needs the TensorFlow backend",
)
def test_mirrored_strategy(trained_teacher):
    teacher = os.path.join(trained_teacher, "teacher", "best_teacher.keras")
    out = os.path.join(trained_teacher, "mirrored")
    argv = ["distill", *SMOKE, "--method", "kd", "--strategy", "mirrored",
            "--teacher", teacher, "--output-dir", out]
    assert run(argv) == 0
    results = check_run_dir(os.path.join(out, "kd"), "student", ["ce_loss", "kd_loss"])
    assert results["strategy"] == "mirrored" and results["replicas"] >= 1


@pytest.mark.skipif(BACKEND != "jax", reason="checks the JAX error message")
def test_mirrored_strategy_is_refused_under_jax(capsys, tmp_path):
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"")
    argv = ["distill", "--preset", PRESET, "--strategy", "mirrored",
            "--teacher", str(teacher), "--output-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "needs the TensorFlow backend" in capsys.readouterr().err


def test_backend_flag_relaunches_under_the_other_backend(capfd, tmp_path):
    # Keras is loaded already, so the command re-runs itself in a new
    # interpreter; a missing teacher makes it stop right after the switch.
    argv = ["distill", "--preset", PRESET, "--backend", OTHER_BACKEND,
            "--output-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err
    assert f"re-running under KERAS_BACKEND={OTHER_BACKEND}" in err
    assert f"--backend {OTHER_BACKEND}" in err  # In the train-teacher hint.
