"""The teacher-output cache (issue 12, part 2): the terms' declarations, the
cached outputs against a direct teacher pass on the keyed views, resuming,
and every reason an opened cache is refused."""

import json
import os

import keras
import numpy as np
import pytest

from conftest import make_network
from conftest import random_uint8_images
from conftest import teacher_with_batch_statistics
from keras_unikd import cache as tc
from keras_unikd import terms
from keras_unikd.cache import build as cache_build
from keras_unikd.cache import manifest as cache_manifest
from keras_unikd.data.keyed import keyed_views
from keras_unikd.taps import FeatureTap
from keras_unikd.terms import TeacherNeeds

SHAPE = (8, 8, 3)
NUM = 11  # not a multiple of the batch size
OPTIONS = {
    "two_views": True,
    "augment": True,
    "crop_padding": 2,
    "mean": [0.5, 0.4, 0.3],
    "std": 0.25,
    "num_ops": 2,
}
TAP = "t_stage1_preact"


def two_view_terms():
    return [
        terms.CrossEntropy(views=2),
        terms.MLKD(),
        terms.UniKDFeatures([TAP], ["s_stage1", "s_stage2"], views=2),
    ]


@pytest.fixture(scope="module")
def data():
    return random_uint8_images(NUM, SHAPE)


@pytest.fixture(scope="module")
def teacher():
    return teacher_with_batch_statistics(SHAPE)


@pytest.fixture(scope="module")
def built(tmp_path_factory, teacher, data):
    """A float32 two-view cache of 3 epochs, built once for the module."""
    directory = str(tmp_path_factory.mktemp("cache") / "t")
    images, labels = data
    cache = tc.build_teacher_cache(
        directory,
        teacher,
        two_view_terms(),
        images,
        labels,
        seed=3,
        epochs=3,
        batch_size=4,
        verbose=0,
        **OPTIONS,
    )
    return directory, cache


def direct(teacher, images, epoch, indices, seed=3):
    """The teacher's logits and pooled tapped feature on `keyed_views`, per view."""
    views = keyed_views(images, seed, epoch, indices, **OPTIONS)
    tap = FeatureTap(teacher, [TAP])
    out = {}
    for name, view in zip(("weak", "strong"), views):
        logits, (feature,) = tap(np.asarray(view), training=False)
        feature = keras.ops.convert_to_numpy(feature)
        out[name] = (keras.ops.convert_to_numpy(logits), feature.mean(axis=(1, 2)))
    return out


def open_cache(directory, teacher, data, **changes):
    images, labels = data
    arguments = dict(
        teacher=teacher, terms=two_view_terms(), images=images, labels=labels, seed=3, epochs=3
    )
    arguments.update(OPTIONS)
    arguments.update(changes)
    return tc.open_teacher_cache(directory, **arguments)


# --- the terms' declarations -------------------------------------------------


def test_terms_declare_what_they_read_of_the_teacher():
    assert terms.CrossEntropy().teacher_needs() == TeacherNeeds()
    assert terms.KD().teacher_needs() == TeacherNeeds(logits=True)
    assert terms.DKD().teacher_needs() == TeacherNeeds(logits=True)
    assert terms.KD(views=2).teacher_needs().views == 2
    assert terms.MLKD().teacher_needs() == TeacherNeeds(logits=True, views=2)
    assert terms.MLKD(views=1).teacher_needs().views == 1
    single = terms.UniKDFeatures([TAP], ["s_stage1", "s_stage2"]).teacher_needs()
    assert single == TeacherNeeds(logits=True, pooled_features=(TAP,))


@pytest.mark.parametrize(
    "term, words",
    [
        (terms.UniKDFeatures(["t_stage1", "t_stage2"], ["s_stage1"]), "MultiStageAggregator"),
        (
            terms.UniKDFeatures(["t_stage1"], ["s_stage1"], fuse_teacher_features=True),
            "MultiStageAggregator",
        ),
        (terms.UniKDFeatures("auto", "auto"), "auto"),
        (terms.FitNetHint("t_stage2", "s_stage2"), "full feature map"),
    ],
)
def test_terms_reading_full_teacher_maps_are_not_cacheable(term, words, teacher, data, tmp_path):
    needs = term.teacher_needs()
    assert not needs.cacheable and words in needs.reason and repr(term.name) in needs.reason
    combined = TeacherNeeds.combine([terms.KD().teacher_needs(), needs])
    assert not combined.cacheable and combined.reason == needs.reason
    with pytest.raises(ValueError, match="online"):
        tc.build_teacher_cache(
            str(tmp_path), teacher, [terms.KD(), term], *data, seed=0, epochs=1, verbose=0
        )
    assert not os.listdir(tmp_path)


def test_custom_term_with_teacher_features_is_not_cacheable_by_default():
    class Custom(terms.DistillationTerm):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.teacher_features = ("t_stage2",)

    needs = Custom(name="custom").teacher_needs()
    assert not needs.cacheable and "teacher_needs()" in needs.reason


def test_combine_unions_features_and_views():
    combined = TeacherNeeds.combine(
        [
            TeacherNeeds(),
            TeacherNeeds(pooled_features=("a",)),
            TeacherNeeds(logits=True, pooled_features=("b", "a"), views=2),
        ]
    )
    assert combined == TeacherNeeds(logits=True, pooled_features=("a", "b"), views=2)


def test_bad_term_sets(teacher, data, tmp_path):
    with pytest.raises(ValueError, match="nothing to cache"):
        tc.build_teacher_cache(
            str(tmp_path), teacher, [terms.CrossEntropy()], *data, seed=0, epochs=1
        )
    with pytest.raises(ValueError, match="two_views=True"):
        tc.build_teacher_cache(str(tmp_path), teacher, [terms.MLKD()], *data, seed=0, epochs=1)


# --- what is cached -----------------------------------------------------------


def test_cache_equals_a_direct_teacher_pass_on_the_keyed_views(built, teacher, data):
    directory, cache = built
    images, _ = data
    assert cache.views == ("weak", "strong") and cache.pooled_features == (TAP,)
    assert cache.epochs == 3 and cache.logits and cache.dtype == "float32"
    indices = np.array([10, 0, 7, 3, 3, 5])
    for epoch in range(3):
        got = cache.lookup(epoch, indices)
        want = direct(teacher, images, epoch, indices)
        for view in ("weak", "strong"):
            np.testing.assert_allclose(got[view]["logits"], want[view][0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(
                got[view]["features"][TAP], want[view][1], rtol=1e-5, atol=1e-6
            )
            assert got[view]["logits"].dtype == np.float32
    # The views differ across views and epochs (the cache is keyed, not by index).
    first, second = cache.lookup(0, indices), cache.lookup(1, indices)
    assert not np.allclose(first["weak"]["logits"], first["strong"]["logits"])
    assert not np.allclose(first["weak"]["logits"], second["weak"]["logits"])
    # Mixed epochs in one batch read each row from its epoch.
    mixed = cache.lookup([2, 0, 1], [4, 4, 9])
    for row, (epoch, index) in enumerate([(2, 4), (0, 4), (1, 9)]):
        alone = cache.lookup(epoch, [index])
        np.testing.assert_array_equal(mixed["strong"]["logits"][row], alone["strong"]["logits"][0])


def test_manifest_records_the_build(built, teacher, data):
    directory, cache = built
    with open(os.path.join(directory, cache_manifest.MANIFEST)) as file:
        manifest = json.load(file)
    assert manifest["teacher"]["weights_sha256"] == tc.teacher_fingerprint(teacher)
    assert manifest["teacher"]["num_classes"] == 5
    assert manifest["dataset"] == tc.dataset_fingerprint(*data)
    assert manifest["augmentation"] == {
        "augment": True,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.25, 0.25, 0.25],
        "crop_padding": 2,
        "num_ops": 2,
        "cutout_size": 4,
    }
    assert manifest["seed"] == 3 and manifest["epochs"] == 3
    assert manifest["epochs_complete"] == [0, 1, 2]
    assert manifest["views"] == ["weak", "strong"] and manifest["dtype"] == "float32"
    assert manifest["outputs"] == {"logits": True, "pooled_features": [TAP]}
    assert {(entry["output"], entry["path"]) for entry in manifest["arrays"]} == {
        ("logits", None),
        ("pooled", TAP),
    }
    # What a Distiller without the teacher model is built from.
    assert manifest["teacher"]["feature_shapes"] == {TAP: [None, 8, 8, 8]}
    assert set(manifest["versions"]) >= {"keras", "tensorflow", "backend"}
    for epoch in range(3):
        array = np.load(os.path.join(directory, f"epoch_{epoch:04d}", "strong.pooled_0.npy"))
        assert array.shape == (NUM, 8) and array.dtype == np.float32
    # On disk: 3 epochs x 2 views x (5 logits + 8 pooled channels) in float32,
    # each array with its .npy header, and the manifest.
    arrays = 3 * 2 * NUM * (5 + 8) * 4
    assert arrays < cache.disk_bytes() < arrays + 3 * 4 * 256 + os.path.getsize(
        os.path.join(directory, cache_manifest.MANIFEST)
    ) + 1


def test_float16_cache(tmp_path, teacher, data):
    images, labels = data
    cache = tc.build_teacher_cache(
        str(tmp_path),
        teacher,
        two_view_terms(),
        images,
        labels,
        seed=3,
        epochs=1,
        dtype="float16",
        verbose=0,
        **OPTIONS,
    )
    indices = np.arange(NUM)
    got, want = cache.lookup(0, indices), direct(teacher, images, 0, indices)
    stored = cache.lookup(0, indices, dtype=None)
    assert stored["weak"]["logits"].dtype == np.float16
    assert got["weak"]["logits"].dtype == np.float32
    for view in ("weak", "strong"):
        # float16 keeps 11 significant bits: a relative error below 2**-11.
        np.testing.assert_allclose(got[view]["logits"], want[view][0], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(
            got[view]["features"][TAP], want[view][1], rtol=1e-3, atol=1e-3
        )


def test_logits_only_single_view_cache(tmp_path, teacher, data):
    images, labels = data
    cache = tc.build_teacher_cache(
        str(tmp_path), teacher, [terms.KD()], images, labels, seed=1, epochs=1, verbose=0
    )
    out = cache.lookup(0, [1, 2])
    assert list(out) == ["weak"] and out["weak"]["features"] == {}
    view = keyed_views(images, 1, 0, [1, 2])
    np.testing.assert_allclose(
        out["weak"]["logits"],
        keras.ops.convert_to_numpy(teacher(np.asarray(view), training=False)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert sorted(os.listdir(tmp_path / "epoch_0000")) == ["weak.logits.npy"]


# --- resuming -----------------------------------------------------------------


def build(directory, teacher, data, epochs):
    return tc.build_teacher_cache(
        str(directory),
        teacher,
        two_view_terms(),
        *data,
        seed=3,
        epochs=epochs,
        batch_size=4,
        verbose=0,
        **OPTIONS,
    )


def read_all(directory, epochs):
    folder = os.fspath(directory)
    return {
        (epoch, name): np.load(os.path.join(folder, f"epoch_{epoch:04d}", name))
        for epoch in range(epochs)
        for name in sorted(os.listdir(os.path.join(folder, f"epoch_{epoch:04d}")))
    }


def test_an_interrupted_build_resumes(tmp_path, monkeypatch, built, teacher, data):
    reference, _ = built
    real = cache_build._EpochWriter.write
    calls = []

    def interrupted(writer, epoch, batches):
        calls.append(epoch)
        if epoch == 2:
            # Killed after the first batch: half-written files stay behind.
            def first_then_stop(epoch_batches):
                yield next(iter(epoch_batches))
                raise KeyboardInterrupt

            batches = first_then_stop(batches)
        return real(writer, epoch, batches)

    monkeypatch.setattr(cache_build._EpochWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, teacher, data, epochs=3)
    with open(tmp_path / cache_manifest.MANIFEST) as file:
        assert json.load(file)["epochs_complete"] == [0, 1]
    open_cache(str(tmp_path), teacher, data, epochs=2)  # the finished epochs are usable
    with pytest.raises(ValueError, match="epoch 2 is missing"):
        open_cache(str(tmp_path), teacher, data, epochs=3)

    calls.clear()

    def counted(writer, epoch, batches):
        calls.append(epoch)
        return real(writer, epoch, batches)

    monkeypatch.setattr(cache_build._EpochWriter, "write", counted)
    build(tmp_path, teacher, data, epochs=3)
    assert calls == [2]  # finished epochs are not recomputed
    resumed, uninterrupted = read_all(tmp_path, 3), read_all(reference, 3)
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        np.testing.assert_allclose(resumed[key], value, rtol=1e-6, atol=1e-7, err_msg=str(key))
    calls.clear()
    build(tmp_path, teacher, data, epochs=3)  # nothing left to do
    build(tmp_path, teacher, data, epochs=4)  # a longer build extends the cache
    assert calls == [3]
    assert open_cache(str(tmp_path), teacher, data, epochs=4).epochs == 4


# --- refusals -----------------------------------------------------------------


def test_open_checks_pass_and_accept_a_fingerprint(built, teacher, data):
    directory, _ = built
    cache = open_cache(directory, teacher, data)
    assert cache.epochs == 3 and "TeacherCache(" in repr(cache)
    # Without the teacher in memory: its fingerprint.
    assert open_cache(directory, tc.teacher_fingerprint(teacher), data, epochs=2).epochs == 2
    # Fewer terms than the cache was built for (KD alone on two views) is fine.
    open_cache(directory, teacher, data, terms=[terms.KD(views=2)])


def test_other_teacher_weights(built, teacher, data, tmp_path):
    directory, _ = built
    keras.utils.set_random_seed(1)
    other = make_network(8, "t", input_shape=SHAPE)
    with pytest.raises(ValueError, match="other teacher weights") as error:
        open_cache(directory, other, data)
    assert "new directory" in str(error.value)
    with pytest.raises(ValueError, match="other teacher weights"):
        build(directory, other, data, epochs=3)


@pytest.mark.parametrize(
    "change, words",
    [
        ("images", "other training data .*images_sha256"),
        ("labels", "other training data .*labels_sha256"),
        ("crop_padding", "other augmentation options .*crop_padding"),
        ("augment", "other augmentation options .*augment"),
        ("seed", "other seed"),
    ],
)
def test_mismatched_data_augmentation_or_seed(built, teacher, data, change, words):
    directory, _ = built
    images, labels = data
    changes = {}
    if change == "images":
        images = images.copy()
        images[0, 0, 0, 0] ^= 1
    elif change == "labels":
        labels = (labels + 1) % 5
    elif change == "crop_padding":
        changes["crop_padding"] = 4
    elif change == "augment":
        changes["augment"] = False
    else:
        changes["seed"] = 4
    with pytest.raises(ValueError, match=words):
        open_cache(directory, teacher, (images, labels), **changes)
    if change == "seed":
        with pytest.raises(ValueError, match=words):
            tc.build_teacher_cache(
                directory, teacher, two_view_terms(), *data, seed=4, epochs=3, verbose=0,
                **OPTIONS,
            )  # fmt: skip


def test_equivalent_options_are_not_a_mismatch(built, teacher, data):
    directory, _ = built
    # The resolved defaults (and int64 labels) compare equal.
    images, labels = data
    open_cache(
        directory, teacher, (images, labels.astype("int64")), cutout_size=4, mean=OPTIONS["mean"]
    )


def test_missing_outputs_or_views(built, teacher, data, tmp_path):
    directory, _ = built
    with pytest.raises(ValueError, match="lacks the pooled teacher feature 't_stage2'"):
        open_cache(
            directory, teacher, data, terms=[terms.UniKDFeatures(["t_stage2"], ["s_stage1"])]
        )
    tc.build_teacher_cache(str(tmp_path), teacher, [terms.KD()], *data, seed=3, epochs=1,
                           verbose=0, augment=True, crop_padding=2, mean=OPTIONS["mean"],
                           std=0.25)  # fmt: skip
    with pytest.raises(ValueError, match="lacks the strong view"):
        open_cache(str(tmp_path), teacher, data, terms=[terms.KD(views=2)], epochs=1)


def test_too_few_epochs(built, teacher, data):
    directory, _ = built
    with pytest.raises(ValueError, match=r"holds epochs 0 \.\. 2 .*asks for 5.*epochs=5"):
        open_cache(directory, teacher, data, epochs=5)


def test_truncated_or_missing_file(tmp_path, teacher, data):
    build(tmp_path, teacher, data, epochs=2)
    path = tmp_path / "epoch_0001" / "weak.logits.npy"
    size = os.path.getsize(path)
    with open(path, "r+b") as file:
        file.truncate(size - 8)
    with pytest.raises(ValueError, match="truncated or damaged"):
        open_cache(str(tmp_path), teacher, data, epochs=2)
    open_cache(str(tmp_path), teacher, data, epochs=1)  # epoch 0 is intact
    os.remove(path)
    with pytest.raises(ValueError, match="is missing.*build_teacher_cache again"):
        open_cache(str(tmp_path), teacher, data, epochs=2)
    # Building again recomputes the damaged epoch alone.
    before = np.load(tmp_path / "epoch_0000" / "weak.logits.npy")
    with pytest.warns(UserWarning, match="Epoch 1 is computed again"):
        build(tmp_path, teacher, data, epochs=2)
    open_cache(str(tmp_path), teacher, data, epochs=2)
    np.testing.assert_array_equal(np.load(tmp_path / "epoch_0000" / "weak.logits.npy"), before)
    with pytest.raises(ValueError, match="no teacher cache"):
        open_cache(str(tmp_path / "nowhere"), teacher, data)


def test_lookup_checks_its_keys(built):
    _, cache = built
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 11\)"):
        cache.lookup(0, [11])
    with pytest.raises(ValueError, match=r"epochs must lie in \[0, 3\)"):
        cache.lookup(3, [0])
    with pytest.raises(ValueError, match="2 epochs for 1 indices"):
        cache.lookup([0, 1], [0])
