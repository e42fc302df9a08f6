import keras
import numpy as np
import pytest

from keras_unikd.models import fashion_student
from keras_unikd.models import fashion_teacher

NAMED = ("stage1", "stage1_preact", "stage2", "stage3", "pool", "logits")


def out_shape(model, name):
    return tuple(model.get_layer(name).output.shape)


def test_parameter_counts():
    teacher = fashion_teacher()
    student = fashion_student()
    assert 200_000 <= teacher.count_params() <= 400_000
    assert 2_000 <= student.count_params() <= 20_000
    assert student.count_params() < teacher.count_params() / 20
    assert fashion_student(width=16).count_params() <= 30_000


def test_teacher_named_layers_28x28():
    model = fashion_teacher()
    assert model.name == "teacher"
    assert out_shape(model, "stage1") == (None, 28, 28, 32)
    assert out_shape(model, "stage1_preact") == (None, 28, 28, 32)
    assert out_shape(model, "stage2") == (None, 14, 14, 64)
    assert out_shape(model, "stage3") == (None, 7, 7, 128)
    assert out_shape(model, "pool") == (None, 128)
    assert out_shape(model, "logits") == (None, 10)
    assert isinstance(model.get_layer("stage1_preact"), keras.layers.BatchNormalization)
    assert isinstance(model.get_layer("stage1"), keras.layers.ReLU)
    # stage1 is the ReLU applied directly to stage1_preact.
    assert model.get_layer("stage1").input is model.get_layer("stage1_preact").output
    assert model.get_layer("logits").activation is keras.activations.linear


def test_student_named_layers_28x28():
    model = fashion_student(width=8)
    assert model.name == "student"
    assert out_shape(model, "stage1") == (None, 28, 28, 8)
    assert out_shape(model, "stage1_preact") == (None, 28, 28, 8)
    assert out_shape(model, "stage2") == (None, 14, 14, 16)
    assert out_shape(model, "stage3") == (None, 7, 7, 32)
    assert out_shape(model, "pool") == (None, 32)
    assert out_shape(model, "logits") == (None, 10)


@pytest.mark.parametrize("builder", [fashion_teacher, fashion_student])
def test_8x8_digits_inputs(builder):
    model = builder(input_shape=(8, 8, 1))
    assert out_shape(model, "stage1")[1:3] == (8, 8)
    assert out_shape(model, "stage2")[1:3] == (4, 4)
    assert out_shape(model, "stage3")[1:3] == (2, 2)
    x = np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (3, 10)
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("size, expected", [(7, (7, 4, 2)), (1, (1, 1, 1))])
def test_odd_and_tiny_inputs(size, expected):
    model = fashion_student(input_shape=(size, size, 3), num_classes=4)
    got = tuple(out_shape(model, f"stage{i}")[1] for i in (1, 2, 3))
    assert got == expected
    assert out_shape(model, "logits") == (None, 4)


def test_tap_model_returns_named_features():
    teacher = fashion_teacher()
    taps = keras.Model(
        teacher.input, [teacher.get_layer(n).output for n in NAMED]
    )
    x = np.zeros((2, 28, 28, 1), "float32")
    outs = [keras.ops.convert_to_numpy(o) for o in taps(x, training=False)]
    assert [o.shape for o in outs] == [
        (2, 28, 28, 32),
        (2, 28, 28, 32),
        (2, 14, 14, 64),
        (2, 7, 7, 128),
        (2, 128),
        (2, 10),
    ]
    assert (outs[0] >= 0).all()  # post-activation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_shape=(28, 28)), "input_shape"),
        (dict(num_classes=0), "num_classes"),
        (dict(width=0), "width"),
        (dict(width=2.5), "width"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fashion_student(**kwargs)


def test_student_fits_on_tf_data_pipeline():
    """The tf.data pipeline feeds model.fit under the active backend."""
    from keras_unikd.data import load_digits_dataset
    from keras_unikd.data import make_image_pipeline
    from keras_unikd.data import take_subset

    keras.utils.set_random_seed(0)
    data = load_digits_dataset()
    x, y = take_subset(data.x_train, data.y_train, 64, seed=0)
    ds = make_image_pipeline(
        x, y, 16, training=True, augment=True, crop_padding=1, shuffle_seed=0
    )
    model = fashion_student(input_shape=data.image_shape, width=4)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(ds, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()
    result = model.evaluate(
        make_image_pipeline(data.x_test[:32], data.y_test[:32], 16, training=False),
        verbose=0,
        return_dict=True,
    )
    assert 0.0 <= result["accuracy"] <= 1.0
