"""A teacher cache's manifest: what the cache was built from and what it holds.

The manifest (`manifest.json` in the cache's directory) identifies a cache by
its teacher's weights, the training data, the keyed augmentation and seed
(`teacher_fingerprint`, `dataset_fingerprint`), records the teacher's class
count, input shape and tapped features' shapes (so that a Distiller can be
built with no teacher model), describes every stored array by an `ArraySpec`,
and lists the epochs that are complete. It is written atomically: to a
temporary file, flushed, then renamed. A cache built in shards also holds
one progress file per unfinished shard (`keras_unikd.cache.shards`).
"""

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
from keras import ops

from keras_unikd import atomic_files

FORMAT = "keras_unikd.teacher_cache"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16")
LOGITS = "logits"
POOLED = "pooled"

# The manifest fields a cache is identified by, with what a mismatch means.
_IDENTITY = (
    ("teacher", "teacher weights"),
    ("dataset", "training data (images or labels)"),
    ("augmentation", "augmentation options"),
    ("seed", "seed"),
)


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """One stored array: one output of the teacher on one view, per epoch.

    Attributes:
        view: `"weak"` or `"strong"`.
        output: `"logits"`, or `"pooled"` (a tapped feature averaged over its
            spatial axes).
        path: The teacher layer path of a pooled feature (`None` for logits).
        width: The array's columns: the class count, or the feature's
            channels. Each epoch's array is `(num_examples, width)`.
        file: The file of each epoch, in the epoch's folder.

    Example:

    >>> spec = ArraySpec.pooled("weak", 0, "stage1", 64)
    >>> spec.file, spec.key
    ('weak.pooled_0.npy', ('weak', 'pooled', 'stage1'))
    >>> ArraySpec.from_config(spec.to_config()) == spec
    True
    """

    view: str
    output: str
    path: str = None
    width: int = 0
    file: str = ""

    @classmethod
    def logits(cls, view, width):
        return cls(view, LOGITS, None, int(width), f"{view}.logits.npy")

    @classmethod
    def pooled(cls, view, index, path, width):
        return cls(view, POOLED, path, int(width), f"{view}.pooled_{index}.npy")

    @property
    def key(self):
        """`(view, output, path)`: what the array holds."""
        return (self.view, self.output, self.path)

    def to_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def array_specs(views, needs, num_classes, feature_shapes):
    """The `ArraySpec`s of a cache of `views` for the terms' `needs`."""
    specs = []
    for view in views:
        if needs.logits:
            specs.append(ArraySpec.logits(view, num_classes))
        specs.extend(
            ArraySpec.pooled(view, index, path, feature_shapes[path][-1])
            for index, path in enumerate(needs.pooled_features)
        )
    return specs


def teacher_fingerprint(teacher):
    """A SHA-256 of a model's weights: shapes, dtypes and values, in order.

    Names are left out (Keras numbers them per session), so the same
    architecture with the same weights gives the same fingerprint in any
    process and under any backend. A cache records its teacher's.

    Args:
        teacher: A `keras.Model`.

    Returns:
        A hex string.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> teacher_fingerprint(model) == teacher_fingerprint(model)
    True
    """
    if not isinstance(teacher, keras.Model):
        raise TypeError(f"teacher_fingerprint expects a keras.Model; got {type(teacher).__name__}.")
    digest = hashlib.sha256()
    for weight in teacher.weights:
        value = np.ascontiguousarray(ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype.str}{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def dataset_fingerprint(images, labels):
    """The shapes, dtypes and SHA-256 hashes of a training set's arrays.

    Args:
        images: The training images, `(N, H, W, C)`.
        labels: The labels, `(N,)` integers (hashed as int64, so int32 and
            int64 labels agree).

    Returns:
        A JSON-ready dict.

    Example:

    >>> import numpy as np
    >>> fingerprint = dataset_fingerprint(np.zeros((2, 4, 4, 1), "uint8"), [0, 1])
    >>> fingerprint["num_examples"], fingerprint["image_shape"], fingerprint["image_dtype"]
    (2, [4, 4, 1], 'uint8')
    """
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(np.asarray(labels).astype("int64"))
    return {
        "num_examples": int(images.shape[0]) if images.ndim else 0,
        "image_shape": [int(d) for d in images.shape[1:]],
        "image_dtype": str(images.dtype),
        "images_sha256": hashlib.sha256(images.data).hexdigest(),
        "labels_sha256": hashlib.sha256(labels.data).hexdigest(),
    }


def training_arrays(images, labels, fn):
    """`images` and `labels` as arrays, checked to be `(N, H, W, C)` and `(N,)`."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or len(images) == 0 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{fn}: `images` must be a non-empty (N, H, W, C) array and `labels` (N,); "
            f"got shapes {images.shape} and {labels.shape}."
        )
    return images, labels


def identity(teacher_hash, images, labels, seed, augmentation):
    """The manifest fields that say which training a cache serves.

    `augmentation` is the resolved `KeyedAugmentation`'s `to_config()`.
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "teacher": {"weights_sha256": teacher_hash},
        "dataset": dataset_fingerprint(images, labels),
        "augmentation": augmentation,
        "seed": int(seed),
    }


def versions():
    """The library versions a cache is built with (the keyed views may differ across
    TensorFlow versions)."""
    import tensorflow as tf

    from keras_unikd import __version__

    return {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "keras_unikd": __version__,
        "backend": keras.backend.backend(),
    }


def epoch_dir(directory, epoch):
    return os.path.join(directory, f"epoch_{epoch:04d}")


def array_path(directory, epoch, spec):
    return os.path.join(epoch_dir(directory, epoch), spec.file)


def write_manifest(directory, manifest):
    """Writes `manifest.json` atomically (`atomic_files.write_json`)."""
    atomic_files.write_json(os.path.join(directory, MANIFEST), manifest)


def read_manifest(directory, fn):
    """The manifest of the cache at `directory`, or a `ValueError` that says why not."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(
            f"{fn}: no teacher cache at {directory!r} ({MANIFEST} is missing). "
            "Build one with keras_unikd.cache.build_teacher_cache(...)."
        )
    try:
        with open(path) as file:
            manifest = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{fn}: the manifest {path!r} cannot be read ({error}). The cache is "
            "damaged: delete the directory and build it again."
        ) from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{fn}: {path!r} is not a keras_unikd teacher cache of format version "
            f"{FORMAT_VERSION} (format {manifest.get('format')!r}, version "
            f"{manifest.get('format_version')!r}). Build the cache again in a new directory."
        )
    return manifest


def specs_of(manifest):
    """The manifest's `ArraySpec`s."""
    return [ArraySpec.from_config(entry) for entry in manifest["arrays"]]


def short(value):
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def check_identity(manifest, expected, directory, fn):
    """`ValueError` naming every identity field that differs.

    The teacher is identified by its weights alone (its record also holds
    its name, classes and shapes, for reading); `expected["teacher"]` of
    `None` (no teacher model at hand) checks the rest only.
    """
    manifest, expected = dict(manifest), dict(expected)
    keys = [(key, what) for key, what in _IDENTITY]
    if expected["teacher"]["weights_sha256"] is None:
        keys = keys[1:]
    for record in (manifest, expected):
        record["teacher"] = {"weights_sha256": (record.get("teacher") or {}).get("weights_sha256")}
    problems = [_difference(manifest, expected, key, what) for key, what in keys]
    problems = [problem for problem in problems if problem]
    if problems:
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} was built for "
            + ", and ".join(problems)
            + ". Its outputs are not this training's teacher outputs. Build a cache "
            "for this setup in a new directory (or delete this one and build again)."
        )


def _difference(manifest, expected, key, what):
    if manifest.get(key) == expected[key]:
        return ""
    if isinstance(expected[key], dict) and isinstance(manifest.get(key), dict):
        fields = sorted(
            field
            for field in set(expected[key]) | set(manifest[key])
            if manifest[key].get(field) != expected[key].get(field)
        )
        detail = "; ".join(
            f"{field}: cache {short(manifest[key].get(field))}, "
            f"now {short(expected[key].get(field))}"
            for field in fields
        )
    else:
        detail = f"cache {short(manifest.get(key))}, now {short(expected[key])}"
    return f"other {what} ({detail})"


def leading_epochs(complete):
    """The number of epochs `0, 1, ...` complete without a gap."""
    count = 0
    while count in complete:
        count += 1
    return count


def cache_needs(terms, fn):
    """The terms' combined `TeacherNeeds`, or a `ValueError` if there is nothing
    a cache can hold for them."""
    from keras_unikd.terms.base import DistillationTerm
    from keras_unikd.terms.base import TeacherNeeds

    if isinstance(terms, TeacherNeeds):
        needs = terms
    else:
        terms = list(terms) if isinstance(terms, (list, tuple)) else [terms]
        for term in terms:
            if not isinstance(term, DistillationTerm):
                raise ValueError(
                    f"{fn}: `terms` must be DistillationTerms (or a TeacherNeeds); "
                    f"got {type(term).__name__}."
                )
        needs = TeacherNeeds.combine(term.teacher_needs() for term in terms)
    if not needs.cacheable:
        raise ValueError(
            f"{fn}: these terms cannot be trained from a teacher cache: {needs.reason}. "
            "Train them online (the teacher runs every step)."
        )
    if not needs.logits and not needs.pooled_features:
        raise ValueError(
            f"{fn}: the terms read nothing of the teacher (e.g. CrossEntropy alone), "
            "so there is nothing to cache."
        )
    return needs


def cache_views(two_views, needs, fn):
    """The views a cache holds: `("weak",)` or `("weak", "strong")`."""
    from keras_unikd.teacher_source import VIEWS
    from keras_unikd.validation import check_bool

    check_bool("two_views", two_views, fn=fn)
    if needs.views == 2 and not two_views:
        raise ValueError(
            f"{fn}: the terms read two views per example (e.g. MLKD), but "
            "`two_views=False`. Pass `two_views=True` (the training batches are "
            "((weak, strong), labels))."
        )
    return VIEWS if two_views else VIEWS[:1]
