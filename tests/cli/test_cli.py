"""`keras-unikd` end to end on mocked CIFAR-100 (tfds.testing.mock_data)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import keras
import pytest
import tensorflow_datasets as tfds

from keras_unikd import cli
from keras_unikd import presets
from keras_unikd.callbacks import StudentCheckpoint
from keras_unikd.methods import METHODS

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


def test_help_and_list_presets_do_not_import_keras():
    """`keras-unikd --help` and `list-presets` answer without Keras (and TensorFlow):
    the package and the command line import them on first use."""
    script = (
        "import sys\n"
        "from keras_unikd import cli\n"
        "assert cli.main(['list-presets']) == 0\n"
        "try:\n"
        "    cli.main(['distill', '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "cifar100_resnet32x4_resnet8x4" in out and "--teacher-cache" in out
    assert out.strip().splitlines()[-1] == "[]"


def test_missing_data_is_one_message_without_a_traceback(tmp_path):
    """Without CIFAR-100 on a machine that cannot download it: the how-to, at once."""
    argv = ["train-teacher", "--preset", PRESET, "--data-dir", str(tmp_path / "tfds"),
            "--output-dir", str(tmp_path / "runs")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-m", "keras_unikd", *argv], capture_output=True, text=True, env=env
    )
    if "cannot reach the download host" not in done.stderr:
        pytest.skip("this machine reaches the TFDS download host")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "keras-unikd: error: cifar100_datasets: could not load the TFDS dataset" in done.stderr
    assert "tfds build cifar100" in done.stderr


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
    assert results["preset_config"]["methods"]["dkd"]["dkd_beta"] == 6.0

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


def test_crd_under_several_replicas_is_refused(capsys, tmp_path, monkeypatch):
    class TwoReplicas:
        num_replicas_in_sync = 2

    monkeypatch.setattr(cli.common, "strategy", lambda args: TwoReplicas())
    argv = ["distill", "--preset", PRESET, "--method", "crd", "--output-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "--method crd keeps a memory row per training example, which the 2 replicas" in (
        capsys.readouterr().err
    )


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


# ----------------------------------------------------------------------
# Two-view methods and logit standardization
# ----------------------------------------------------------------------

UNIMLKD_PRESET = "cifar100_resnet32x4_resnet8x4_unimlkd"
MLKD_TERMS = ["mlkd_instance_loss", "mlkd_class_loss", "mlkd_batch_loss"]
TINY = ["--epochs", "1", "--take", "8", "--batch-size", "4", "--verbose", "0", "--seed", "0"]


@pytest.fixture
def eager_steps(monkeypatch):
    """Runs the CLI's training steps eagerly (these tests run under TensorFlow).

    Tracing a two-view train step of ResNet32x4 -> ResNet8x4 (teacher and
    student on both views; UniKD's modules are built in the first call, so
    the step is traced twice) takes about 2 minutes on a CPU, and two eager
    steps take seconds.
    """
    compile_for_training = presets.compile_for_training

    def eager(*args, **kwargs):
        return compile_for_training(*args, run_eagerly=True, **kwargs)

    monkeypatch.setattr(presets, "compile_for_training", eager)


# The command line's choice of method, views and data is the same Keras
# code under every backend; the two-view training steps themselves are
# tested on every backend with small models (tests/distiller/test_views.py,
# tests/terms/test_mlkd.py). A compiled two-view step of these preset models costs
# about a minute under JAX, so these two run in the TensorFlow pass.
tensorflow_pass_only = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="backend-independent CLI wiring; two-view steps on every backend: test_views.py",
)


@tensorflow_pass_only
def test_unimlkd_preset_trains_on_two_views(tmp_path, monkeypatch, eager_steps):
    # The UniMLKD preset with its own method (no --method): two-view
    # training batches from cifar100_datasets(two_views=True), one-view
    # validation; every term of UniMLKD in the log.
    from keras_unikd.data import cifar100

    batches = []
    datasets = cifar100.cifar100_datasets

    def spy(**kwargs):
        train, val = datasets(**kwargs)
        batches.append((kwargs["two_views"], train.element_spec, val.element_spec))
        return train, val

    monkeypatch.setattr(cifar100, "cifar100_datasets", spy)
    teacher = str(tmp_path / "teacher.keras")
    presets.build_model(UNIMLKD_PRESET, "teacher").save(teacher)
    out = str(tmp_path / "runs")
    argv = ["distill", "--preset", UNIMLKD_PRESET, *TINY, "--teacher", teacher,
            "--output-dir", out]
    assert run(argv) == 0
    ((two_views, train_spec, val_spec),) = batches
    assert two_views
    (weak, strong), labels = train_spec
    assert weak.shape[1:] == strong.shape[1:] == (32, 32, 3) and labels.shape.rank == 1
    assert val_spec[0].shape[1:] == (32, 32, 3)  # One view.
    results = check_run_dir(
        os.path.join(out, "unimlkd"), "student",
        ["ce_loss", *MLKD_TERMS, "feature_loss", "consistency_loss"],
    )
    assert (results["method"], results["views"], results["logit_standardization"]) == (
        "unimlkd", 2, False,
    )
    assert results["published_top1"] == 78.18
    assert results["preset_config"]["recipe"]["epochs"] == 480
    assert results["preset_config"]["two_views"] is True


@tensorflow_pass_only
def test_logit_standardization_runs_the_ls_variant(trained_teacher, eager_steps):
    # MLKD's preset of the cheapest pair, with the VGG13 teacher trained above.
    teacher = os.path.join(trained_teacher, "teacher", "best_teacher.keras")
    out = os.path.join(trained_teacher, "mlkd_preset")
    argv = ["distill", "--preset", "cifar100_vgg13_vgg8_mlkd", *TINY, "--method", "mlkd",
            "--logit-standardization", "--teacher", teacher, "--output-dir", out]
    assert run(argv) == 0
    results = check_run_dir(os.path.join(out, "mlkd+ls"), "student", ["ce_loss", *MLKD_TERMS])
    assert (results["method"], results["views"], results["logit_standardization"]) == (
        "mlkd+ls", 2, True,
    )
    assert results["published_top1"] == 75.22  # MLKD+LS, VGG13 -> VGG8.


# The feature methods of the table that no test above runs from the command line.
FEATURE_BASELINES = [
    name
    for name, method in METHODS.items()
    if {"teacher_feature", "teacher_features"} & method.setting_names
    and name not in ("unikd", "unimlkd", "fitnet")
]


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="the command line is the same under every backend; each term trains under every "
    "backend in tests/terms and tests/distiller/test_auto_feature_methods.py",
)
@pytest.mark.parametrize("method", FEATURE_BASELINES)
def test_distill_a_feature_baseline(trained_teacher, eager_steps, method):
    teacher = os.path.join(trained_teacher, "teacher", "best_teacher.keras")
    out = os.path.join(trained_teacher, f"baseline_{method}")
    argv = ["distill", "--preset", PRESET, *TINY, "--method", method, "--teacher", teacher,
            "--output-dir", out]  # fmt: skip
    assert run(argv) == 0
    expected = [name for term in presets.build_terms(PRESET, method) for name in term.loss_names]
    results = check_run_dir(os.path.join(out, method), "student", expected)
    assert results["method"] == method


def test_run_method():
    base = presets.get_preset("cifar100_resnet32x4_resnet8x4")
    assert cli.run_method(base) == ("unikd", 1)
    assert cli.run_method(presets.get_preset(UNIMLKD_PRESET)) == ("unimlkd", 2)
    assert cli.run_method(base, "mlkd") == ("mlkd", 2)
    assert cli.run_method(base, "kd", logit_standardization=True) == ("kd+ls", 1)
    assert cli.run_method(base, "unimlkd", logit_standardization=True) == ("unimlkd+ls", 2)
    assert cli.ls_methods() == ["unikd", "unimlkd", "dkd", "mlkd", "kd"]


@pytest.mark.parametrize("method", ["fitnet", "student"])
def test_logit_standardization_needs_a_kl_method(capsys, tmp_path, method):
    argv = ["distill", "--preset", PRESET, "--method", method, "--logit-standardization",
            "--output-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--method {method} does not have" in err
    assert "--method unikd | unimlkd | dkd | mlkd | kd" in err
    assert not os.listdir(tmp_path)  # Refused before anything ran.


@pytest.mark.parametrize("method", ["mlkd", "unimlkd"])
def test_two_view_methods_need_a_two_view_pipeline(capsys, tmp_path, method):
    argv = ["distill", "--preset", "imagenet_resnet34_resnet18", "--method", method,
            "--output-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "two views" in err and "imagenet pipeline has one view" in err
    assert "Use a CIFAR-100 preset" in err
    with pytest.raises(cli.CLIError, match="need a CIFAR-100 preset"):
        cli.load_datasets(presets.get_preset("imagenet_resnet34_resnet18"), 4, views=2)


def test_list_presets_shows_method_and_views(capsys):
    assert cli.main(["list-presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line for line in lines if line.startswith(UNIMLKD_PRESET)]
    assert row.split()[4:7] == ["unimlkd", "2", "480"]
    (row,) = [line for line in lines if line.startswith("cifar100_vgg13_vgg8 ")]
    assert row.split()[4:7] == ["any", "1", "240"]
