"""keras-hub classifiers (random weights, nothing downloaded) distilled on every backend.

A ResNet `ImageClassifier`, a `ViTImageClassifier` and a BERT
`TextClassifier` (three inputs, a dict per batch), each distilled into a
smaller one of its kind with automatic taps, a few steps.
"""

import keras
import numpy as np
import pytest

import keras_unikd

keras_hub = pytest.importorskip("keras_hub", reason="the hub extra: pip install keras-unikd[hub]")


def resnet_classifier(filters, name):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, filters],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=10, name=name)


def vit_classifier(hidden_dim, name):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=hidden_dim,
        mlp_dim=2 * hidden_dim,
    )
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=10, name=name)


def bert_classifier(hidden_dim, name):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        max_sequence_length=12,
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=3, preprocessor=None, name=name
    )


def images(batch=8, classes=10):
    rng = np.random.default_rng(0)
    return rng.random((batch, 32, 32, 3), dtype=np.float32), rng.integers(0, classes, batch)


def texts(batch=8, length=12, classes=3):
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(1, 50, (batch, length)).astype("int32"),
        "segment_ids": np.zeros((batch, length), "int32"),
        "padding_mask": np.ones((batch, length), "int32"),
    }
    return x, rng.integers(0, classes, batch)


def distil_a_few_steps(teacher, student, x, y):
    distiller = keras_unikd.Distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"])
    before = [np.array(w) for w in student.trainable_weights]
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = [np.array(w) for w in student.trainable_weights]
    assert all(np.all(np.isfinite(v)) for v in history.history["loss"])
    assert set(distiller.loss_term_names) <= set(history.history)
    assert {"feature_loss", "consistency_loss", "dkd_loss"} <= set(distiller.loss_term_names)
    assert any(not np.allclose(b, a) for b, a in zip(before, after))
    return distiller


def test_resnet_image_classifiers():
    keras.utils.set_random_seed(0)
    teacher, student = resnet_classifier(32, "teacher"), resnet_classifier(16, "student")
    distiller = distil_a_few_steps(teacher, student, *images())
    unikd = distiller.terms[-1]
    # The backbone's pyramid levels (P2, P3: its stacks' outputs), then the pooled vector.
    for model, paths in ((teacher, unikd.teacher_features), (student, unikd.student_features)):
        backbone = model.backbone.name
        stages = [f"{backbone}/stack0_block0_out", f"{backbone}/stack1_block0_out"]
        assert list(paths) == stages + ["pooler"]


def test_vit_image_classifiers():
    keras.utils.set_random_seed(0)
    teacher, student = vit_classifier(32, "teacher"), vit_classifier(16, "student")
    distiller = distil_a_few_steps(teacher, student, *images())
    unikd = distiller.terms[-1]
    # The backbone's name is Keras's next free one (other tests build ViTs too).
    assert f"{teacher.backbone.name}/vit_encoder" in unikd.teacher_features


def test_vit_teacher_cnn_student():
    keras.utils.set_random_seed(0)
    distil_a_few_steps(vit_classifier(32, "teacher"), resnet_classifier(16, "student"), *images())


def test_bert_text_classifiers_on_dict_batches():
    keras.utils.set_random_seed(0)
    teacher, student = bert_classifier(32, "teacher"), bert_classifier(16, "student")
    distiller = distil_a_few_steps(teacher, student, *texts())
    # The backbone's pooled output, the one its classifier reads (its token
    # features have no fixed length, so they cannot be read as maps).
    unikd = distiller.terms[-1]
    assert list(unikd.teacher_features) == [f"{teacher.backbone.name}/pooled_dense"]
    assert list(unikd.student_features) == [f"{student.backbone.name}/pooled_dense"]
    x, _ = texts()
    logits = keras.ops.convert_to_numpy(distiller.predict(x, verbose=0))
    expected = keras.ops.convert_to_numpy(student.predict(x, verbose=0))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
