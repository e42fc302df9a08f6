"""The method table: methods, variants, settings, and the keyword form over it."""

import warnings

import pytest

from keras_unikd import methods
from keras_unikd import terms
from keras_unikd.keyword_form import terms_from_keywords


def configs(term_list):
    return [{k: v for k, v in t.get_config().items() if k != "name"} for t in term_list]


def test_every_method_builds_and_declares_its_views():
    taps = dict(teacher_features=["t1"], student_features=["s1", "s2"])
    fitnet = dict(teacher_feature="t", student_feature="s")
    needed = {"unikd": taps, "unimlkd": taps, "fitnet": fitnet}
    for name, method in methods.METHODS.items():
        built = method.terms(**needed.get(name, {}))
        assert isinstance(built[0], terms.CrossEntropy), name
        assert {term.views for term in built} == {method.views}, name
    assert methods.TWO_VIEW_METHODS == ("unimlkd", "mlkd")
    assert methods.method_views("mlkd+ls") == 2 and methods.method_base("fdp-only") == "unikd"


def test_settings_are_checked_and_resolved():
    with pytest.raises(ValueError, match=r"Method 'kd' has no setting\(s\) \['dkd_beta'\]"):
        methods.method_terms("kd", dkd_beta=2.0)
    with pytest.raises(ValueError, match=r"'mlkd_temperatures'\] are not settings of logits_loss"):
        methods.method_terms("unikd", teacher_features="t", student_features="s",
                             mlkd_temperatures=(4.0,))
    with pytest.raises(ValueError, match="Unknown method 'no-such-method'"):
        methods.method_terms("no-such-method")
    resolved = methods.METHODS["unimlkd"].resolve(dkd_beta=1.0)
    assert (resolved["logits_loss"], resolved["distribution_temperature"]) == ("mlkd", 4.0)
    assert resolved["mlkd_temperatures"] is None and resolved["ce_weight"] == 1.0
    assert methods.with_seed("fitnet", {}, 3) == {} and methods.with_seed("unikd", {}, 3) == {
        "seed": 3
    }


def test_variants_transform_and_do_not_change_the_method_terms():
    plain = methods.method_terms("mlkd")
    before = configs(plain)
    standardized = methods.with_logit_standardization(plain)
    assert configs(plain) == before  # new terms, the given ones untouched
    assert standardized[1].temperatures == (2.0, 3.0, 5.0, 2.0, 6.0)
    assert (standardized[1].weight, standardized[1].logit_standardization) == (9.0, True)
    assert standardized[0].weight == plain[0].weight  # no KD term: the CE keeps its weight
    unikd = methods.method_terms("unikd", teacher_features="t", student_features=["a", "b", "c"])
    assert methods.with_deepest_student_map_only(unikd)[2].student_features == ("b",)
    assert [type(t).__name__ for t in methods.without_logits_loss(unikd)] == [
        "CrossEntropy", "UniKDFeatures"
    ]


@pytest.mark.parametrize(
    "keywords, method, settings",
    [
        (dict(logits_loss="kd", distribution_loss=None), "kd",
         dict(ce_weight=1.0, logits_weight=1.0, warmup_epochs="auto")),
        (dict(logits_loss="mlkd", distribution_loss=None, mlkd_level_weights=(1, 0.5, 0.5)),
         "mlkd", dict(ce_weight=1.0, logits_weight=1.0, warmup_epochs="auto",
                      mlkd_level_weights=(1, 0.5, 0.5))),
        (dict(teacher_features="t", student_features="s"), "unikd",
         dict(teacher_features="t", student_features="s", warmup_epochs="auto")),
        (dict(teacher_features="t", student_features="s", logits_loss=None), "unikd",
         dict(teacher_features="t", student_features="s", logits_loss=None)),
    ],
)
def test_the_keyword_form_is_the_table(keywords, method, settings):
    assert configs(terms_from_keywords(**keywords)) == configs(
        methods.method_terms(method, **settings)
    )


FEATURE_DEFAULTS = [
    # (method, taps, the weight's name, the reference's value, the fix the warning names)
    ("fitnet", dict(teacher_feature="t2", student_feature="s2"), "hint_weight", 100.0,
     "'fitnet+kd' with hint_weight=1"),
    ("at", {}, "feature_weight", 1000.0, "'at+kd' with feature_weight=10"),
]


@pytest.mark.parametrize("method, taps, name, reference, fix", FEATURE_DEFAULTS)
def test_feature_weights_left_to_the_reference_warn_and_name_the_fix(
    method, taps, name, reference, fix
):
    with pytest.warns(UserWarning, match="worse than no teacher") as caught:
        built = methods.method_terms(method, **taps)
    message = str(caught[0].message).splitlines()[0]
    assert f"{name}={reference:g}" in message and fix in message
    assert built[1].weight == reference


@pytest.mark.parametrize("method, taps, name, reference, fix", FEATURE_DEFAULTS)
def test_feature_weights_given_do_not_warn(method, taps, name, reference, fix):
    for weight in (reference, 1.0):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            built = methods.method_terms(method, **taps, **{name: weight})
        assert built[1].weight == weight
