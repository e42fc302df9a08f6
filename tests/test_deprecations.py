"""Names that moved still import, and warn where they moved to."""

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    "module, names, new_home",
    [
        ("keras_unikd.teacher_cache", ("build_teacher_cache", "split_cached_batch"),
         "keras_unikd.cache"),
        ("keras_unikd.presets.methods", ("METHODS", "VARIANTS"), "keras_unikd.methods"),
    ],
)
def test_moved_modules_warn_on_import(module, names, new_home):
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=new_home):
        imported = importlib.import_module(module)
    assert all(hasattr(imported, name) for name in names)


def test_moved_checks_warn():
    from keras_unikd import distiller_checks
    from keras_unikd import validation
    from keras_unikd.terms import base

    with pytest.warns(DeprecationWarning, match="keras_unikd.distiller_checks.first_batch"):
        assert validation.first_batch is distiller_checks.first_batch
    with pytest.warns(DeprecationWarning, match="keras_unikd.validation.check_positive"):
        assert base.check_positive is validation.check_positive
    with pytest.raises(AttributeError):
        validation.no_such_check  # noqa: B018
