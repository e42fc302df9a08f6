"""Terms that pair teacher and student stage maps in order: their shared scaffolding."""

from keras import ops

from keras_unikd.terms.base import AUTO_FEATURES
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import as_layer_paths
from keras_unikd.terms.base import choose_paired_stages
from keras_unikd.terms.base import feature_needs
from keras_unikd.terms.base import paths_config


def check_stage_pairs(term, teacher, student, chosen=False):
    """A `ValueError` unless `teacher` and `student` pair up.

    Either may be `"auto"` unless `chosen` (at build, when a Distiller has
    chosen them).
    """
    if AUTO_FEATURES in (teacher, student):
        if not chosen:
            return
        raise ValueError(
            f"{term} has teacher_features or student_features 'auto', which the Distiller "
            "chooses from the models before it builds the term. Use the term in a "
            "Distiller, or give layer names."
        )
    if not teacher or len(teacher) != len(student):
        raise ValueError(
            f"{term} pairs teacher and student stages: give as many teacher_features as "
            f"student_features (at least one); got {list(teacher)} and {list(student)}."
        )


def check_map(term, path, shape):
    """A `ValueError` unless `shape` is a `(batch, H, W, C)` map's."""
    if len(shape) != 4:
        raise ValueError(
            f"{term} reads feature maps (batch, H, W, C); layer {path!r} outputs shape "
            f"{tuple(shape)}. Tap a convolutional stage."
        )


def pool_factors(teacher_path, teacher, student_path, student, term):
    """`(teacher factor, student factor)`: the larger map's pooling window, `None` for 1.

    The larger of two `(batch, H, W, C)` shapes is pooled to the smaller's
    size by an integer factor per axis (`average_pool`); `term` names the
    term in the errors.

    Example:

    >>> pool_factors("t", (None, 8, 8, 4), "s", (None, 4, 4, 2), term="AttentionTransfer")
    ((2, 2), None)
    """
    sizes = {"teacher": tuple(teacher[1:3]), "student": tuple(student[1:3])}
    if None in sizes["teacher"] + sizes["student"]:
        raise ValueError(
            f"{term} needs maps of known size; got {teacher_path!r} "
            f"{tuple(teacher)} and {student_path!r} {tuple(student)}."
        )
    small = tuple(min(t, s) for t, s in zip(sizes["teacher"], sizes["student"]))
    factors = []
    for side in ("teacher", "student"):
        size = sizes[side]
        if any(dim % target for dim, target in zip(size, small)):
            raise ValueError(
                f"{term} pools the larger map to the smaller's size by an integer "
                f"factor, but {teacher_path!r} is {sizes['teacher']} and {student_path!r} "
                f"{sizes['student']}. Tap stages whose sizes divide each other."
            )
        window = tuple(dim // target for dim, target in zip(size, small))
        factors.append(None if window == (1, 1) else window)
    return tuple(factors)


def average_pool(feature, window):
    """`feature` average-pooled by a `pool_factors` window (as is for `None`)."""
    if window is None:
        return feature
    return ops.average_pool(feature, pool_size=window, strides=window, padding="valid")


def pooled_pairs(term, record, windows):
    """`(teacher map, student map)` of each of `term`'s pairs in `record`, pooled by
    their `pool_factors` windows (`windows`, one pair of them per stage pair)."""
    for (teacher_path, student_path), (teacher_pool, student_pool) in zip(
        zip(term.teacher_features, term.student_features), windows
    ):
        yield (
            average_pool(record.teacher_features[teacher_path], teacher_pool),
            average_pool(record.student_features[student_path], student_pool),
        )


class StagePairTerm(DistillationTerm):
    """Base class of the terms that pair teacher and student stages in order.

    A subclass (AT, NST, VID, OFD, KD-SVD) reads, for each pair
    `(teacher_features[i], student_features[i])`, the two tapped
    `(batch, H, W, C)` maps. This class parses the two feature arguments
    (layer paths or `"auto"`) and checks that they pair up (`check_pairs`),
    declares the teacher's maps as read whole (`teacher_needs`: a
    teacher-output cache cannot serve the term), lets `"auto"` pair the
    deepest stage ends of both networks (`choose_paired_stages`), gives the
    pairs' checked shapes to `build` (`paired_shapes`) and saves both
    feature lists in `get_config`. It is abstract (not registered).

    Subclasses set the class attribute `teacher_maps_reason`, what the term
    does with the teacher's maps (`{paths}` stands for their paths), and
    define `build`, `call` and, for their own arguments, `get_config`; a
    term with more conditions on the pairs extends `check_pairs` (KD-SVD), one
    with its own message for a tap that is not a map overrides
    `check_stage_map` (AT).

    Args:
        teacher_features: Teacher layer paths, one per pair, or `"auto"`.
        student_features: Student layer paths, as many, in the same order,
            or `"auto"`.
        weight: Weight of the loss.
        name: The term's name (its loss is `{name}_loss`).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`).
    """

    # What the term does with the teacher's whole maps, for the reason a
    # cache cannot serve it; `{paths}` stands for their paths.
    teacher_maps_reason = "reads the teacher's full feature maps {paths}"

    def __init__(self, teacher_features, student_features, weight, name, **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        self.teacher_features = as_layer_paths(
            teacher_features, "teacher_features", allow_auto=True
        )
        self.student_features = as_layer_paths(
            student_features, "student_features", allow_auto=True
        )
        self.check_pairs()

    def check_pairs(self, chosen=False):
        """A `ValueError` unless the features pair up (`"auto"` only before `chosen`)."""
        check_stage_pairs(type(self).__name__, self.teacher_features, self.student_features, chosen)

    def teacher_needs(self):
        """Not cacheable: the teacher's whole maps (`teacher_maps_reason`)."""
        paths = repr(paths_config(self.teacher_features))
        return feature_needs(self, self.teacher_maps_reason.format(paths=paths))

    def choose_auto_features(self, teacher, student):
        """`"auto"`: the stage ends, the deepest of each network paired."""
        choose_paired_stages(self, teacher, student)

    def paired_shapes(self, shapes):
        """`(teacher path, teacher shape, student path, student shape)` per pair.

        For `build(shapes)`: the pairs must be chosen and each shape a map's
        (`check_map`).
        """
        self.check_pairs(chosen=True)
        pairs = []
        for teacher_path, student_path in zip(self.teacher_features, self.student_features):
            teacher, student = shapes.teacher[teacher_path], shapes.student[student_path]
            self.check_stage_map(teacher_path, teacher)
            self.check_stage_map(student_path, student)
            pairs.append((teacher_path, teacher, student_path, student))
        return pairs

    def check_stage_map(self, path, shape):
        """A `ValueError` unless layer `path`'s `shape` is a map's (`check_map`)."""
        check_map(type(self).__name__, path, shape)

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_features": paths_config(self.teacher_features),
            "student_features": paths_config(self.student_features),
        }
