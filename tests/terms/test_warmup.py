"""`warmup_epochs="auto"`: a warm-up of 1/12 of the planned run (the paper's 20 of 240)."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd
from keras_unikd import terms


class Probe(terms.DistillationTerm):
    """Reports 1, so its loss is its warm-up factor."""

    def call(self, record):
        return {self.loss_names[0]: ops.ones(())}


def probe_distiller(pair, warmup_epochs="auto", **kwargs):
    return keras_unikd.Distiller(
        *pair,
        terms=[terms.CrossEntropy(), Probe(warmup_epochs=warmup_epochs, name="probe")],
        **kwargs,
    )


def factor_at(distiller, epoch, batch):
    """The probe's factor at `epoch` (from 1), through the Distiller's counters."""
    x, y = batch
    distiller.training_step.assign(float(epoch - 1))  # one step per epoch
    losses = distiller.compute_distillation_losses(x[:4], y[:4], training=False)[1]
    return float(ops.convert_to_numpy(losses["probe_loss"]))


@pytest.mark.parametrize("planned", [6, 30, 240])
def test_auto_warmup_lasts_a_twelfth_of_the_planned_run(pair, batch, planned):
    distiller = probe_distiller(pair, steps_per_epoch=1, planned_epochs=planned)
    for epoch in sorted({1, 2, 3, planned // 24 or 1, planned // 12, planned // 12 + 1, planned}):
        expected = min(epoch / (planned / 12), 1.0)
        assert factor_at(distiller, epoch, batch) == pytest.approx(expected, rel=1e-6), epoch


def test_fit_plans_the_run(pair, batch):
    x, y = batch  # 2 steps of 8 per epoch
    factors = []

    class BatchLogs(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            factors.append(float(logs["probe_loss"]))

    distiller = probe_distiller(pair)
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, batch_size=8, epochs=6, shuffle=False, verbose=0, callbacks=[BatchLogs()])
    assert float(ops.convert_to_numpy(distiller.planned_epochs)) == 6.0
    np.testing.assert_allclose(factors, [1.0] * 12)  # half an epoch of warm-up: done at once
    # Planned for 24 epochs (of one step, for factor_at): 2 epochs of warm-up.
    distiller.steps_per_epoch.assign(1.0)
    distiller.planned_epochs.assign(24.0)
    assert [factor_at(distiller, epoch, batch) for epoch in (1, 2, 3)] == pytest.approx(
        [0.5, 1.0, 1.0]
    )


def test_without_a_plan_auto_lasts_20_epochs_and_says_so(pair, batch):
    x, y = batch
    distiller = probe_distiller(pair, steps_per_epoch=1)
    assert factor_at(distiller, 5, batch) == pytest.approx(5 / 20)
    distiller.training_step.assign(0.0)
    distiller.compile(optimizer="sgd")
    with pytest.warns(UserWarning, match=r"planned_epochs is unknown.*over 20 epochs"):
        logs = distiller.train_on_batch(x, y, return_dict=True)
    assert logs["probe_loss"] == pytest.approx(1 / 20)


def test_explicit_warmups_are_unchanged(pair, batch):
    distiller = probe_distiller(pair, warmup_epochs=20, steps_per_epoch=1, planned_epochs=6)
    assert factor_at(distiller, 5, batch) == pytest.approx(0.25)
    distiller.compile(optimizer="sgd")
    x, y = batch
    with pytest.warns(UserWarning, match="'probe' warms up over 20 epochs but the training runs 2"):
        distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)


def test_auto_never_outlasts_the_run(pair, batch):
    x, y = batch
    distiller = probe_distiller(pair)
    distiller.compile(optimizer="sgd")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert not [w for w in caught if "warms up over" in str(w.message)]


def test_auto_is_the_keyword_forms_default_and_round_trips(pair):
    distiller = keras_unikd.Distiller(*pair, logits_loss="dkd", distribution_loss=None)
    assert distiller.terms[1].warmup_epochs == "auto"
    term = terms.DKD(warmup_epochs="auto")
    assert terms.DKD.from_config(term.get_config()).warmup_epochs == "auto"
    distiller.planned_epochs.assign(30.0)
    restored = keras_unikd.Distiller.from_config(distiller.get_config())
    assert restored.terms[1].warmup_epochs == "auto"
    assert float(ops.convert_to_numpy(restored.planned_epochs)) == 30.0


@pytest.mark.parametrize("bad", ["long", -1, -0.5, float("inf"), float("nan"), True])
def test_bad_warmups_name_the_choices(bad):
    with pytest.raises(ValueError, match=r"warmup_epochs must be a number of epochs >= 0.* 'auto'"):
        terms.KD(warmup_epochs=bad)


def test_fractional_warmups(pair, batch):
    distiller = probe_distiller(pair, warmup_epochs=2.5, steps_per_epoch=1, planned_epochs=6)
    assert [factor_at(distiller, epoch, batch) for epoch in (1, 2, 3)] == pytest.approx(
        [0.4, 0.8, 1.0]
    )
    assert terms.KD.from_config(terms.KD(warmup_epochs=2.5).get_config()).warmup_epochs == 2.5
