"""keras_unikd.validation: one module of argument checks, name first."""

import numpy as np
import pytest

from keras_unikd import validation as v


def test_checks_return_what_they_accept():
    assert v.check_positive_int("epochs", np.int64(3)) == 3
    assert v.check_positive_int("take", None, allow_none=True) is None
    assert v.check_int("start_epoch", 2, high=3) == 2
    assert v.check_non_negative("weight", 0.0) == 0.0
    assert v.check_positive("temperature", np.float32(2.0)) == 2.0
    assert v.check_bool("augment", True) is True
    assert v.check_per_channel("mean", 0.5, 3) == [0.5, 0.5, 0.5]
    v.check_normalization(None, None)


@pytest.mark.parametrize(
    "check, match",
    [
        (lambda: v.check_positive_int("epochs", 0, fn="f"), r"^f: `epochs` must be a positive"),
        (lambda: v.check_positive_int("epochs", True), "epochs must be a positive integer"),
        (lambda: v.check_positive_int("epochs", 2.0), "got 2.0"),
        (lambda: v.check_int("seed", -1), "seed must be an integer >= 0"),
        (lambda: v.check_int("start_epoch", 3, high=3), "integer >= 0 and below 3"),
        (lambda: v.check_int("pad", "1", allow_none=True), "pad must be None or an integer"),
        (lambda: v.check_non_negative("KD weight", -1.0), "A negative weight would maximise"),
        (lambda: v.check_non_negative("momentum", float("inf")), r"momentum .* got inf\.$"),
        (lambda: v.check_positive("KD temperature", "4"), r"number > 0; got '4' \(a str\)"),
        (lambda: v.check_positive("KD temperature", 0), "softmax"),
        (lambda: v.check_bool("nesterov", 1), "nesterov must be True or False; got 1"),
        (lambda: v.check_choice("loss", "mse", ("kd",), fn="f"), r"^f: Unknown loss='mse'"),
        (lambda: v.check_per_channel("std", [1, 2], 3), r"one value per channel \(3\)"),
        (lambda: v.check_normalization(0.5, None), "pass both `mean` and `std`"),
        (lambda: v.check_normalization(0.5, 0.0), "`std` must be positive"),
    ],
)
def test_each_refusal_names_the_argument_and_the_fix(check, match):
    with pytest.raises(ValueError, match=match):
        check()
