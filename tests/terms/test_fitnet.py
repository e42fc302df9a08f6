import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd
from conftest import weights_of
from keras_unikd.methods import method_terms


def test_hint_loss_is_weighted_mse_through_the_regressor(pair, batch):
    teacher, student = pair
    x, y = batch
    fitnet = method_terms(
        "fitnet", teacher_feature="t_stage2", student_feature="s_stage2", hint_weight=50.0
    )
    distiller = keras_unikd.Distiller(teacher, student, terms=fitnet)
    assert distiller.loss_term_names == ["ce_loss", "hint_loss"]
    _, terms, _ = distiller.compute_distillation_losses(x, y, training=False)
    s_feat = keras.Model(student.input, student.get_layer("s_stage2").output)(x)
    t_feat = keras.Model(teacher.input, teacher.get_layer("t_stage2").output)(x)
    kernel, bias = (ops.convert_to_numpy(w) for w in distiller.terms[-1].regressor.weights)
    guided = np.einsum("bhwc,cd->bhwd", ops.convert_to_numpy(s_feat), kernel[0, 0]) + bias
    expected = 50.0 * np.mean((guided - ops.convert_to_numpy(t_feat)) ** 2)
    np.testing.assert_allclose(float(terms["hint_loss"]), expected, rtol=1e-5)


def test_fitnet_plus_kd_trains_the_regressor_and_round_trips(pair, batch, tmp_path):
    teacher, student = pair
    x, y = batch
    with pytest.warns(DeprecationWarning, match="FitNetDistiller is deprecated"):
        distiller = keras_unikd.FitNetDistiller(
            teacher, student, "t_stage1", "s_stage1", logits_loss="kd", warmup_epochs=0
        )
    # The same terms as the method table's FitNet + KD.
    table = method_terms("fitnet+kd", teacher_feature="t_stage1", student_feature="s_stage1")
    assert [t.get_config() for t in distiller.terms] == [t.get_config() for t in table]
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"])
    before = weights_of(distiller.terms[-1].regressor)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "ce_loss", "kd_loss", "hint_loss", "accuracy"}
    assert not np.array_equal(before[0], weights_of(distiller.terms[-1].regressor)[0])
    path = str(tmp_path / "fitnet.keras")
    distiller.save(path)
    with pytest.warns(DeprecationWarning):
        loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_unikd.FitNetDistiller)
    restored = (loaded.teacher_feature, loaded.student_feature, loaded.hint_weight)
    assert restored == ("t_stage1", "s_stage1", 100.0)
    expected = distiller.compute_distillation_losses(x, y)[1]["hint_loss"]
    hint_loss = loaded.compute_distillation_losses(x, y)[1]["hint_loss"]
    assert float(hint_loss) == pytest.approx(float(expected), rel=1e-6)


def test_hints_must_be_feature_maps(pair):
    hint = method_terms("fitnet", teacher_feature="t_stage2", student_feature="s_pool")
    with pytest.raises(ValueError, match="FitNet hints are feature maps; layer 's_pool'"):
        keras_unikd.Distiller(*pair, terms=hint)
    with pytest.raises(ValueError, match="Unknown logits_loss='mse'"):
        with pytest.warns(DeprecationWarning):
            keras_unikd.FitNetDistiller(*pair, "t_stage2", "s_stage2", logits_loss="mse")
