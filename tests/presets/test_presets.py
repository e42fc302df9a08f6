"""Presets of the paper's experiments: data, optimizer, and a short training run each."""

import dataclasses
import math
import warnings

import keras
import numpy as np
import pytest

import keras_unikd
from keras_unikd import methods
from keras_unikd import presets
from keras_unikd.methods import reads_train_labels
from keras_unikd.models import imagenet_resnet
from keras_unikd.models import layers_util

BACKEND = keras.backend.backend()

# (teacher, student) -> DKD beta, from mdistiller's configs.
EXPECTED_PAIRS = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("resnet32x4", "resnet8x4"): 8.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
    ("vgg13", "vgg8"): 6.0,
    ("resnet32x4", "shufflenetv1"): 8.0,
    ("resnet32x4", "shufflenetv2"): 8.0,
    ("wrn_40_2", "shufflenetv1"): 8.0,
    ("vgg13", "mobilenetv2"): 6.0,
    ("resnet50", "mobilenetv2"): 8.0,
    ("resnet34_imagenet", "resnet18_imagenet"): 0.5,
    ("resnet50_imagenet", "mobilenet_imagenet"): 2.0,
}
LIGHT_STUDENTS = {"shufflenetv1", "shufflenetv2", "mobilenetv2"}

METHOD_PRESET = "cifar100_vgg13_vgg8"

# The DKD paper's presets (every method trains with their recipe), and the
# presets of one method's recipe (the same pairs and models).
PAPER_PRESETS = [n for n in presets.list_presets() if presets.get_preset(n).method is None]
METHOD_PRESETS = [n for n in presets.list_presets() if presets.get_preset(n).method]
UNIMLKD_PRESET = "cifar100_resnet32x4_resnet8x4_unimlkd"
# MLKD's recipes (Jin-Ying/Multi-Level-Logit-Distillation,
# configs/cifar100/ours/*.yaml): pair -> (epochs, learning rate).
MLKD_RECIPES = {
    ("resnet56", "resnet20"): (240, 0.025),
    ("resnet110", "resnet32"): (240, 0.025),
    ("resnet32x4", "resnet8x4"): (240, 0.025),
    ("wrn_40_2", "wrn_16_2"): (240, 0.025),
    ("wrn_40_2", "wrn_40_1"): (240, 0.025),
    ("vgg13", "vgg8"): (240, 0.025),
    ("resnet32x4", "shufflenetv1"): (480, 0.01),
    ("resnet32x4", "shufflenetv2"): (480, 0.01),
    ("wrn_40_2", "shufflenetv1"): (480, 0.0025),
    ("vgg13", "mobilenetv2"): (480, 0.0025),
    ("resnet50", "mobilenetv2"): (480, 0.0025),
}


def train_steps(preset):
    """Two steps, or one where a step is slow on a CPU: the 224x224 ImageNet
    pairs, and ShuffleNetV1 (grouped convolutions, which TensorFlow compiles
    with XLA at every eager call on a CPU)."""
    return 1 if preset.dataset == "imagenet" or preset.student == "shufflenetv1" else 2


def calibrate_batch_norm(model, x):
    """Sets every BatchNormalization's moving statistics from one batch.

    A freshly initialised teacher run in inference mode (moving mean 0,
    variance 1) lets activations grow through deep residual stacks until
    they overflow; setting the statistics from a batch makes the random
    teacher behave like a trained one in scale.
    """
    layers = [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def random_batch(preset, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size,) + preset.input_shape).astype("float32")
    y = rng.integers(0, preset.num_classes, size=(batch_size,)).astype("int32")
    return x, y


# ----------------------------------------------------------------------
# The registry as data
# ----------------------------------------------------------------------


def test_registry_has_every_pair_of_the_paper():
    paper = [presets.get_preset(name) for name in PAPER_PRESETS]
    pairs = {(p.teacher, p.student): p for p in paper}
    assert set(pairs) == set(EXPECTED_PAIRS)
    assert len(paper) == len(EXPECTED_PAIRS)
    assert presets.list_presets()[: len(paper)] == PAPER_PRESETS  # The paper's first.
    for pair, beta in EXPECTED_PAIRS.items():
        _, dkd = presets.build_terms(pairs[pair], "dkd")
        assert (dkd.beta, dkd.alpha) == (beta, 1.0), pair


@pytest.mark.parametrize("name", [n for n in PAPER_PRESETS if n.startswith("cifar100")])
def test_cifar_recipe(name):
    preset = presets.get_preset(name)
    recipe = preset.recipe
    assert (preset.num_classes, preset.image_size) == (100, 32)
    assert recipe.learning_rate == (0.01 if preset.student in LIGHT_STUDENTS else 0.05)
    assert (recipe.epochs, recipe.batch_size, recipe.lr_decay_epochs) == (240, 64, (150, 180, 210))
    assert (recipe.momentum, recipe.weight_decay, recipe.lr_decay_rate) == (0.9, 5e-4, 0.1)
    assert preset.teacher_recipe.learning_rate == 0.05
    _, dkd = presets.build_terms(preset, "dkd")
    assert (dkd.temperature, dkd.warmup_epochs) == (4.0, 20)
    unikd = preset.settings("unikd")
    assert unikd["teacher_features"] == ("stage1_preact",)
    assert unikd["student_features"][0] == "stage1" and unikd["student_features"][-1] == "pool"
    assert preset.published.teacher and preset.published.dkd > preset.published.kd


@pytest.mark.parametrize("name", presets.list_presets("imagenet"))
def test_imagenet_recipe(name):
    preset = presets.get_preset(name)
    recipe = preset.recipe
    assert (preset.num_classes, preset.image_size) == (1000, 224)
    assert (recipe.epochs, recipe.batch_size, recipe.learning_rate) == (100, 512, 0.2)
    assert (recipe.lr_decay_epochs, recipe.weight_decay) == ((30, 60, 90), 1e-4)
    _, dkd = presets.build_terms(preset, "dkd")
    ce, kd = presets.build_terms(preset, "kd")
    assert (dkd.temperature, dkd.warmup_epochs, kd.temperature) == (1.0, 1, 1.0)
    assert (ce.weight, kd.weight) == (0.5, 0.5)


def test_mlkd_presets_have_mlkd_recipes():
    mlkd = [presets.get_preset(n) for n in METHOD_PRESETS if n.endswith("_mlkd")]
    assert {(p.teacher, p.student) for p in mlkd} == set(MLKD_RECIPES)
    assert len(mlkd) == len(MLKD_RECIPES)
    for preset in mlkd:
        base = presets.get_preset(preset.name[: -len("_mlkd")])
        recipe = preset.recipe
        pair = (preset.teacher, preset.student)
        assert (recipe.epochs, recipe.learning_rate) == MLKD_RECIPES[pair]
        assert (recipe.batch_size, recipe.lr_decay_epochs) == (64, (150, 180, 210))
        assert (recipe.momentum, recipe.weight_decay, recipe.lr_decay_rate) == (0.9, 5e-4, 0.1)
        assert (preset.method, preset.two_views) == ("mlkd", True)
        ce, mlkd = presets.build_terms(preset, "mlkd")
        assert mlkd.temperatures == (4.0, 3.0, 5.0, 2.0, 6.0)
        assert (ce.weight, mlkd.weight) == (0.1, 0.9)
        # The pair's models, taps, teacher recipe and other methods' settings.
        same = ("teacher", "student", "teacher_recipe", "methods")
        assert all(getattr(preset, f) == getattr(base, f) for f in same), preset.name
        assert preset.published.teacher == base.published.teacher
        assert preset.published.dkd is None  # DKD's number is for DKD's recipe.
        assert "Multi-Level-Logit-Distillation" in preset.config_source
    published = presets.get_preset("cifar100_resnet32x4_resnet8x4_mlkd").published
    assert (published.mlkd, published.mlkd_ls) == (77.08, 78.28)
    assert presets.get_preset("cifar100_vgg13_mobilenetv2_mlkd").published.of("mlkd") == 70.57


def test_unimlkd_preset_is_the_authors_recipe():
    preset = presets.get_preset(UNIMLKD_PRESET)
    recipe = preset.recipe
    assert (preset.teacher, preset.student, preset.method) == ("resnet32x4", "resnet8x4", "unimlkd")
    assert (recipe.epochs, recipe.learning_rate, recipe.batch_size) == (480, 0.025, 64)
    assert (recipe.lr_decay_epochs, recipe.lr_decay_rate) == ((150, 180, 210), 0.1)
    assert (recipe.momentum, recipe.weight_decay) == (0.9, 5e-4)
    assert preset.two_views
    _, mlkd, features = presets.build_terms(preset, "unimlkd")
    assert mlkd.temperatures == (4.0, 3.0, 5.0, 2.0, 6.0)
    assert features.temperature == 4.0
    assert features.student_features == ("stage1", "stage2", "stage3", "pool")  # AFF inputs.
    assert features.teacher_features == ("stage1_preact",)
    assert preset.published.of("unimlkd") == 78.18
    assert preset.published.of("mlkd") is None  # MLKD's 77.08 is at 240 epochs.


def test_two_view_flag_follows_the_method():
    for name in presets.list_presets():
        preset = presets.get_preset(name)
        assert preset.method in (None, *presets.METHODS), name
        assert preset.two_views == (preset.method in presets.TWO_VIEW_METHODS), name
    assert presets.TWO_VIEW_METHODS == ("unimlkd", "mlkd")


def test_published_of_methods_and_variants():
    published = presets.get_preset("cifar100_resnet32x4_resnet8x4").published
    assert (published.of("kd"), published.of("kd+ls")) == (73.33, 76.62)
    assert (published.of("dkd"), published.of("dkd+ls")) == (76.32, 77.01)
    assert published.of("mlkd") is None and published.of("fitnet") is None
    assert published.of("note") is None  # Not a number.


def test_presets_are_frozen_data():
    preset = presets.get_preset("cifar100_resnet32x4_resnet8x4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.method = "kd"
    with pytest.raises(TypeError):  # the methods' settings are read-only too
        preset.methods["dkd"]["dkd_beta"] = 1.0
    as_dict = preset.to_dict()
    assert as_dict["recipe"]["learning_rate"] == 0.05
    assert as_dict["published"]["teacher"] == 79.42
    assert as_dict["methods"]["unikd"]["teacher_features"] == ["stage1_preact"]


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="cifar100_resnet32x4_resnet8x4") as info:
        presets.get_preset("resnet32x4_to_nothing")
    assert "Known presets" in str(info.value)


def test_unknown_method():
    match = "Unknown method 'no-such-method'.*or a variant: .*mlkd\\+ls"
    with pytest.raises(ValueError, match=match):
        presets.build_terms(METHOD_PRESET, "no-such-method")
    with pytest.raises(ValueError, match="Unknown method 'no-such-method'"):
        presets.build_distiller(METHOD_PRESET, None, None, "no-such-method")


def test_keras_applications_taps_are_mapped():
    preset = presets.get_preset("imagenet_resnet50_mobilenet")
    assert presets.layer_names(preset.teacher, presets.TEACHER_FEATURES) == ["conv2_block3_add"]
    assert presets.layer_names(preset.student, "stage2") == "conv_pw_5_relu"
    assert preset.settings("unikd")["student_features"] == (
        "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu", "pool",
    )
    assert preset.settings("fitnet")["teacher_feature"] == "conv3_block4_out"


def test_method_hyperparameters():
    preset = presets.get_preset("cifar100_resnet56_resnet20")
    ce, dkd, features = presets.build_terms(preset, "unikd", seed=3)
    assert (ce.weight, dkd.weight, dkd.beta, dkd.temperature, dkd.warmup_epochs) == (
        1.0, 1.0, 2.0, 4.0, 20,
    )
    assert (features.distribution_loss, features.temperature, features.seed) == ("sampled", 1.0, 3)
    assert features.teacher_features == ("stage1_preact",)
    ce, kd = presets.build_terms(preset, "kd")
    assert (ce.weight, kd.weight, kd.warmup_epochs, kd.temperature) == (0.1, 0.9, 0, 4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reference's weights, given: no warning
        ce, hint = presets.build_terms(preset, "fitnet")
        at = presets.build_terms(preset, "at")[1]
    assert (ce.weight, hint.teacher_features, hint.weight) == (1.0, ("stage2",), 100.0)
    assert hint.weight == methods.FITNET_HINT_WEIGHT and at.weight == methods.AT_FEATURE_WEIGHT


def test_variants_change_their_method():
    vgg = "cifar100_vgg13_vgg8"  # Four student stages.
    unikd = presets.build_terms(vgg, "unikd")[2]
    assert unikd.student_features[-2:] == ("stage4", "pool")
    assert presets.build_terms(vgg, "fdp-only")[2].student_features == ("stage4",)
    assert presets.build_terms(vgg, "unikd-gaussian")[2].distribution_loss == "gaussian"
    no_logits = presets.build_terms(vgg, "aff+fdp-no-logits")
    assert [type(t).__name__ for t in no_logits] == ["CrossEntropy", "UniKDFeatures"]
    assert no_logits[1].student_features == unikd.student_features
    fitnet_kd = presets.build_terms(vgg, "fitnet+kd")
    assert [type(t).__name__ for t in fitnet_kd] == ["CrossEntropy", "KD", "FitNetHint"]
    assert (fitnet_kd[1].temperature, fitnet_kd[1].weight, fitnet_kd[2].weight) == (4.0, 1.0, 100.0)
    mobilenet = presets.build_terms("imagenet_resnet50_mobilenet", "fdp-only")[2]
    assert mobilenet.student_features == ("conv_pw_13_relu",)


def test_mlkd_terms():
    # MLKD's reference: CE 0.1 on both views, MLKD 0.9 over [4, 3, 5, 2, 6], no warm-up.
    ce, mlkd = presets.build_terms("cifar100_resnet32x4_resnet8x4_mlkd", "mlkd")
    assert type(ce) is keras_unikd.terms.CrossEntropy and type(mlkd) is keras_unikd.terms.MLKD
    assert (ce.weight, ce.views) == (0.1, 2)
    assert (mlkd.weight, mlkd.views, mlkd.warmup_epochs) == (0.9, 2, 0)
    assert mlkd.temperatures == (4.0, 3.0, 5.0, 2.0, 6.0)
    assert (mlkd.instance_weight, mlkd.class_weight, mlkd.batch_weight) == (1.0, 1.0, 1.0)
    assert mlkd.logit_standardization is False
    # The presets reproduce the reference's sums at every batch (the last one of
    # an epoch is smaller), not the balanced scaling of a user's MLKD.
    for name in presets.list_presets():
        for method in ("mlkd", "unimlkd", "mlkd+ls", "unimlkd+ls"):
            (term,) = [t for t in presets.build_terms(name, method) if type(t).__name__ == "MLKD"]
            assert term.level_scaling == "reference", (name, method)
    # Any preset gives MLKD its reference settings (the pair's other methods keep theirs).
    assert presets.get_preset(METHOD_PRESET).settings("mlkd") == presets.get_preset(
        "cifar100_vgg13_vgg8_mlkd"
    ).settings("mlkd")


def test_unimlkd_terms():
    ce, mlkd, features = presets.build_terms(UNIMLKD_PRESET, "unimlkd")
    assert type(features) is keras_unikd.terms.UniKDFeatures
    assert (ce.weight, ce.views) == (1.0, 2)
    assert (mlkd.weight, mlkd.views, mlkd.warmup_epochs) == (1.0, 2, 0)
    assert mlkd.temperatures == (4.0, 3.0, 5.0, 2.0, 6.0)
    assert (features.views, features.temperature, features.distribution_loss) == (2, 4.0, "sampled")
    assert (features.feature_weight, features.consistency_weight) == (1.0, 1.0)
    assert features.teacher_features == ("stage1_preact",)
    assert features.student_features == ("stage1", "stage2", "stage3", "pool")
    assert features.warmup_epochs == 0
    assert not mlkd.logit_standardization and not features.logit_standardization


@pytest.mark.parametrize("method", ["mlkd", "unimlkd"])
def test_logit_standardization_variants_of_mlkd(method):
    # The LS reference's CIFAR-100 settings: --base-temp 2 replaces MLKD's
    # first temperature, --kd-weight 9 weights the logits term; every KL term
    # standardizes; the cross-entropy keeps its method's weight.
    plain = presets.build_terms(UNIMLKD_PRESET, method)
    terms = presets.build_terms(UNIMLKD_PRESET, f"{method}+ls")
    ce, mlkd = terms[:2]
    assert ce.weight == plain[0].weight and ce.views == 2
    assert (mlkd.weight, mlkd.views, mlkd.logit_standardization) == (9.0, 2, True)
    assert mlkd.temperatures == (2.0, 3.0, 5.0, 2.0, 6.0)
    if method == "unimlkd":
        features = terms[2]
        assert features.logit_standardization and features.views == 2
        assert features.temperature == 4.0  # The distribution terms keep theirs.
    else:
        assert len(terms) == 2


def test_logit_standardization_variants_of_kd_and_dkd():
    kd = presets.build_terms(METHOD_PRESET, "kd+ls")
    assert [type(t).__name__ for t in kd] == ["CrossEntropy", "KD"]
    assert (kd[0].weight, kd[1].weight, kd[1].temperature) == (0.1, 9.0, 2.0)
    assert kd[1].logit_standardization and kd[1].views == 1
    dkd = presets.build_terms(METHOD_PRESET, "dkd+ls")
    assert (dkd[1].weight, dkd[1].temperature, dkd[1].logit_standardization) == (9.0, 2.0, True)


def test_one_method_table():
    """The CLI and the Fashion-MNIST experiment take their methods from the table."""
    from keras_unikd import cli
    from keras_unikd.experiments import fashion_mnist

    parser = cli.build_parser()
    for method in presets.METHODS:
        args = parser.parse_args(["distill", "--preset", METHOD_PRESET, "--method", method])
        assert args.method == method
    with pytest.raises(SystemExit):
        parser.parse_args(["distill", "--preset", METHOD_PRESET, "--method", "fitnet+kd"])

    # Each variant follows its method (its terms: tests/benchmarks/
    # test_fashion_mnist_experiment.py).
    table = fashion_mnist.METHODS
    assert set(table) == set(presets.METHODS) | set(presets.VARIANTS)
    order = list(table)
    for variant in presets.VARIANTS.values():
        assert order.index(variant.name) > order.index(variant.method), variant.name
        assert table[variant.name][0] == variant.name


# ----------------------------------------------------------------------
# Optimizer
# ----------------------------------------------------------------------


def test_step_schedule_in_steps():
    schedule = presets.learning_rate_schedule("cifar100_resnet32x4_resnet8x4", 10)
    # Epoch e (1-based) runs iterations 10 (e - 1) .. 10 e - 1; the rate
    # drops from epoch 151 on, as in mdistiller.
    for step, expected in [(0, 0.05), (1499, 0.05), (1500, 0.005), (1800, 5e-4), (2100, 5e-5)]:
        assert float(schedule(step)) == pytest.approx(expected), step
    light = presets.learning_rate_schedule("cifar100_vgg13_mobilenetv2", 10)
    assert float(light(0)) == pytest.approx(0.01)
    short = presets.learning_rate_schedule("cifar100_vgg13_vgg8", 10, epochs=24)
    assert float(short(149)) == pytest.approx(0.05) and float(short(150)) == pytest.approx(0.005)
    imagenet = presets.learning_rate_schedule("imagenet_resnet34_resnet18", 100)
    assert float(imagenet(3000)) == pytest.approx(0.02)


def test_optimizer_is_pytorch_form_sgd_with_coupled_weight_decay():
    optimizer = presets.build_optimizer("cifar100_resnet32x4_resnet8x4", steps_per_epoch=100)
    assert isinstance(optimizer, keras_unikd.TorchSGD)
    variable = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer.build([variable])
    gradients = [np.array([0.5, 0.25], "float32"), np.array([-1.0, 0.0], "float32")]
    # PyTorch SGD: g += wd * w; buf = momentum * buf + g; w -= lr * buf.
    w, buf = np.array([1.0, -2.0]), np.zeros(2)
    for g in gradients:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
        buf = 0.9 * buf + (g + 5e-4 * w)
        w = w - 0.05 * buf
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), w, rtol=1e-6)
    config = optimizer.get_config()
    assert (config["l2_decay"], config["momentum"], config["nesterov"]) == (5e-4, 0.9, False)
    restored = keras_unikd.TorchSGD.from_config(config)
    assert restored.l2_decay == 5e-4
    teacher = presets.build_optimizer("imagenet_resnet34_resnet18", 10, role="teacher")
    assert isinstance(teacher, keras_unikd.TorchSGD) and teacher.l2_decay == 1e-4


def test_the_old_optimizer_name_still_loads():
    # Presets used CoupledWeightDecaySGD (Keras's momentum form) before
    # TorchSGD; files saved then name it, and it resumes as it trained.
    name = "keras_unikd>CoupledWeightDecaySGD"
    assert keras.saving.get_registered_name(presets.CoupledWeightDecaySGD) == name
    with pytest.warns(DeprecationWarning, match="use keras_unikd.TorchSGD"):
        old = presets.CoupledWeightDecaySGD(l2_decay=1e-4, momentum=0.9)
    serialized = keras.optimizers.serialize(old)
    assert serialized["registered_name"] == name
    # Files saved when the class lived in keras_unikd/presets.py name that module.
    for module in ("keras_unikd.presets", "keras_unikd.presets.builders"):
        serialized["module"] = module
        restored = keras.optimizers.deserialize(serialized)
        assert isinstance(restored, presets.CoupledWeightDecaySGD) and restored.l2_decay == 1e-4


# ----------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------


def test_imagenet_resnet_parameter_counts(monkeypatch):
    # Structure only: constant initialisers skip the per-shape random kernels.
    monkeypatch.setattr(layers_util, "conv_initializer", lambda: "zeros")
    monkeypatch.setattr(layers_util, "dense_initializer", lambda: "zeros")
    for name, builder in (
        ("imagenet_resnet18", imagenet_resnet.imagenet_resnet18),
        ("imagenet_resnet34", imagenet_resnet.imagenet_resnet34),
    ):
        model = builder()
        count = sum(math.prod(w.shape) for w in model.trainable_weights)
        assert count == imagenet_resnet.IMAGENET_EXACT_PARAMS[name]
        shapes = {
            n: tuple(model.get_layer(n).output.shape[1:])
            for n in ("stem", "stage1_preact", "stage4", "pool")
        }
        assert shapes == {
            "stem": (112, 112, 64),
            "stage1_preact": (56, 56, 64),
            "stage4": (7, 7, 512),
            "pool": (512,),
        }


# ----------------------------------------------------------------------
# Every preset trains
# ----------------------------------------------------------------------


# The method presets share the paper presets' models and taps; their
# methods are stepped below and through the command line (tests/cli/test_cli.py).
@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_preset_builds_and_trains(name):
    if BACKEND == "jax":
        pytest.skip(
            "JAX on CPU compiles every op shape (minutes per preset); the presets are "
            "backend-independent data, swept under TensorFlow and PyTorch, and JAX steps "
            "METHOD_PRESET's models with every method (test_every_method_builds_and_steps)"
        )
    keras.utils.set_random_seed(0)
    preset = presets.get_preset(name)
    teacher, student = presets.build_models(preset)
    assert tuple(teacher.inputs[0].shape[1:]) == preset.input_shape
    assert teacher.outputs[0].shape[-1] == student.outputs[0].shape[-1] == preset.num_classes
    x, y = random_batch(preset, 2)
    calibrate_batch_norm(teacher, random_batch(preset, 4, seed=1)[0])

    distiller = presets.build_distiller(preset, teacher, student, "unikd", seed=0)
    assert isinstance(distiller, keras_unikd.Distiller)
    (dkd,) = [term for term in distiller.terms if isinstance(term, keras_unikd.terms.DKD)]
    assert dkd.beta == preset.settings("dkd")["dkd_beta"]
    # Eager steps: two steps are cheaper than tracing the step on a CPU.
    presets.compile_for_training(
        preset, distiller, presets.build_optimizer(preset, 10), run_eagerly=True
    )
    for _ in range(train_steps(preset)):
        logs = distiller.train_on_batch(x, y, return_dict=True)
    for term in ("ce_loss", "dkd_loss", "feature_loss", "consistency_loss", "loss", "accuracy"):
        assert term in logs
        assert np.isfinite(float(logs[term])), (term, logs)


EXPECTED_TERMS = {
    "unikd": {"ce_loss", "dkd_loss", "feature_loss", "consistency_loss"},
    "unimlkd": {
        "ce_loss", "mlkd_instance_loss", "mlkd_class_loss", "mlkd_batch_loss",
        "feature_loss", "consistency_loss",
    },
    "dkd": {"ce_loss", "dkd_loss"},
    "mlkd": {"ce_loss", "mlkd_instance_loss", "mlkd_class_loss", "mlkd_batch_loss"},
    "kd": {"ce_loss", "kd_loss"},
    "fitnet": {"ce_loss", "hint_loss"},
    "at": {"ce_loss", "at_loss"},
    "dist": {"ce_loss", "dist_inter_loss", "dist_intra_loss"},
    "sp": {"ce_loss", "sp_loss"},
    "pkt": {"ce_loss", "pkt_loss"},
    "rkd": {"ce_loss", "rkd_distance_loss", "rkd_angle_loss"},
    "reviewkd": {"ce_loss", "reviewkd_loss"},
    "nst": {"ce_loss", "nst_loss"},
    "kdsvd": {"ce_loss", "kdsvd_loss"},
    "vid": {"ce_loss", "vid_loss"},
    "ofd": {"ce_loss", "ofd_loss"},
    "crd": {"ce_loss", "crd_loss"},
    "student": set(),
}


# The feature baselines step on a preset under TensorFlow only: each trains
# under every backend in tests/terms and, with automatic taps, on models of
# several kinds in tests/distiller/test_auto_feature_methods.py.
FEATURE_BASELINES = {"nst", "kdsvd", "vid", "ofd", "reviewkd", "sp", "pkt", "rkd", "crd"}


@pytest.mark.parametrize("method", [*presets.METHODS, "mlkd+ls", "unimlkd+ls"])
def test_every_method_builds_and_steps(method):
    if method in FEATURE_BASELINES and BACKEND != "tensorflow":
        pytest.skip("a feature baseline: its preset step runs in the TensorFlow pass")
    keras.utils.set_random_seed(0)
    preset = presets.get_preset(METHOD_PRESET)
    teacher, student = presets.build_models(preset)
    calibrate_batch_norm(teacher, random_batch(preset, 4, seed=1)[0])
    # CRD's memory banks: a training set of 8 examples of 8 classes.
    indexed = reads_train_labels(method)
    labels = np.arange(8) if indexed else None
    model = presets.build_distiller(preset, teacher, student, method, seed=0, train_labels=labels)
    base = method.split("+")[0]
    expected_terms = EXPECTED_TERMS[base]
    if method == "student":
        assert model is student
    else:
        assert set(model.loss_term_names) == expected_terms
    presets.compile_for_training(
        preset, model, presets.build_optimizer(preset, 10), run_eagerly=True
    )
    x, y = random_batch(preset, 2)
    if indexed:
        x = {"inputs": x, "example_index": np.array([3, 5])}
    if base in presets.TWO_VIEW_METHODS:
        x = (x, random_batch(preset, 2, seed=2)[0])  # (weak, strong)
        standardized = [t for t in model.terms if getattr(t, "logit_standardization", False)]
        assert len(standardized) == (len(model.terms) - 1 if method.endswith("+ls") else 0)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert expected_terms | {"loss", "accuracy"} <= set(logs)
    assert all(np.isfinite(float(value)) for value in logs.values()), logs
