"""`warmup_epochs="auto"`: a quarter of the planned run, at most the paper's 20 epochs."""

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


@pytest.mark.parametrize("planned, length", [(6, 1.5), (30, 7.5), (80, 20.0), (240, 20.0)])
def test_auto_warmup_lasts_a_quarter_of_the_run_up_to_20_epochs(pair, batch, planned, length):
    distiller = probe_distiller(pair, steps_per_epoch=1, planned_epochs=planned)
    for epoch in sorted({1, 2, 3, int(length) // 2 or 1, int(length), int(length) + 1, planned}):
        expected = min(epoch / length, 1.0)
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
    # A quarter of 6 epochs: 1.5 epochs of warm-up, 2/3 in the first epoch.
    np.testing.assert_allclose(factors, [2 / 3] * 2 + [1.0] * 10, rtol=1e-6)
    # Planned for 12 epochs (of one step, for factor_at): 3 epochs of warm-up.
    distiller.steps_per_epoch.assign(1.0)
    distiller.planned_epochs.assign(12.0)
    assert [factor_at(distiller, epoch, batch) for epoch in (1, 2, 3, 4)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0]
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
