"""Overhaul feature distillation (Heo et al., ICCV 2019): pre-ReLU maps and a margin."""

import math

import keras
import numpy as np
from keras import ops

from keras_unikd import losses
from keras_unikd.layers.pooling import adaptive_average_pool
from keras_unikd.models.layers_util import BN_EPSILON
from keras_unikd.models.layers_util import BN_MOMENTUM
from keras_unikd.models.layers_util import conv_initializer
from keras_unikd.pre_activation import PREACT_HINT
from keras_unikd.pre_activation import batch_norm_before
from keras_unikd.pre_activation import relu_input_path
from keras_unikd.terms.stages import StagePairTerm
from keras_unikd.validation import check_positive_int

KIND = "OverhaulFeatureDistillation"
# The reference falls back to -3 std when P(x < 0) is at most this.
MIN_NEGATIVE_PROBABILITY = 0.001


def gaussian_margin(std, mean):
    """The reference's margin of one channel: `E[x | x < 0]` for `x ~ N(mean, std^2)`.

    `mean - std * phi(mean / std) / Phi(-mean / std)`, or `-3 std` when
    `Phi(-mean / std) <= 0.001` (the reference's fallback); `std` is used by
    its absolute value. With `std = 0` (where the reference divides by zero)
    it is the limit, `min(mean, 0)`.

    Example:

    >>> round(gaussian_margin(1.0, 0.0), 6)  # -sqrt(2 / pi)
    -0.797885
    >>> gaussian_margin(1.0, 4.0)
    -3.0
    """
    std, mean = abs(float(std)), float(mean)
    if std == 0.0:
        return min(mean, 0.0)
    z = mean / std
    negative = 0.5 * math.erfc(z / math.sqrt(2.0))  # Phi(-z)
    if negative <= MIN_NEGATIVE_PROBABILITY:
        return -3.0 * std
    return mean - std * math.exp(-(z**2) / 2.0) / math.sqrt(2.0 * math.pi) / negative


def batch_norm_margins(layer):
    """Float64 margins `(C,)` of a `BatchNormalization`: its gamma as std, beta as mean."""
    channels = layer.moving_mean.shape[0]
    gamma = _numpy(layer.gamma) if layer.scale else np.ones(channels)
    beta = _numpy(layer.beta) if layer.center else np.zeros(channels)
    return np.array([gaussian_margin(s, m) for s, m in zip(gamma, beta)])


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), "float64")


def partial_l2(student, teacher, margin):
    """`(batch,)`: the reference's partial L2 distance, summed over positions and channels.

    With the teacher `t` clipped below at the margin `m` (`max(t, m)`), a
    position counts `(s - max(t, m))^2` unless the student is already below
    a non-positive target: `(s - m)^2` where `s > m >= t`; `(s - t)^2` where
    `s > t > m` and `t <= 0`, and wherever `t > 0`.
    """
    margin = ops.cast(margin, "float32")
    below = ops.logical_and(student > margin, teacher <= margin)
    between = ops.logical_and(ops.logical_and(student > teacher, teacher > margin), teacher <= 0.0)
    matched = ops.logical_or(between, teacher > 0.0)
    distance = ops.square(student - margin) * ops.cast(below, "float32") + ops.square(
        student - teacher
    ) * ops.cast(matched, "float32")
    return ops.sum(distance, axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="keras_unikd")
class OverhaulFeatureDistillation(StagePairTerm):
    """Overhaul feature distillation over pairs of pre-ReLU stages (`ofd_loss`).

    For each pair `(teacher layer, student layer)` of tapped pre-ReLU
    `(batch, H, W, C)` maps, a connector (a bias-free `k x k` convolution,
    student channels to the teacher's, then batch normalisation) maps the
    student's map `f_s` to `s`; the teacher's map is average-pooled to the
    student's size (PyTorch's `adaptive_avg_pool2d`) to `t`, and with a
    margin `m_c` per teacher channel (`partial_l2`)

    `ofd_loss = weight * sum_{i=1..n} 2^-(n-i) mean_examples sum_{positions,
    channels} d(s, t, m)`,

    `d = (s - m)^2 [s > m >= t] + (s - t)^2 ([s > t > m, t <= 0] + [t > 0])`.

    The margin is the reference's `get_margin`: the expected value of a
    Gaussian's negative part, `E[x | x < 0]` for `x ~ N(beta_c, gamma_c^2)`
    with the teacher's batch normalisation before the ReLU giving its
    shift `beta` as the mean and its scale `|gamma|` as the std, or
    `-3 |gamma_c|` when `P(x < 0) <= 0.001` (`gaussian_margin`). The
    normalisation is the tapped layer itself (a `BatchNormalization`), or,
    for a residual `Add`, the one ending its residual branch
    (`keras_unikd.pre_activation.batch_norm_before`), as the reference's
    `get_bn_before_relu` takes a ResNet block's `bn2` / `bn3` although the
    pre-ReLU tensor is the sum with the shortcut. The margins are computed
    from the teacher's weights when a `Distiller` builds the term and kept
    as non-trainable weights (saved and restored with the Distiller): load
    the teacher's trained weights before building the Distiller.

    This follows the reference code (megvii-research/mdistiller,
    `distillers/OFD.py`, which produced the published CIFAR-100 baseline):
    weight 0.001 next to a cross-entropy of weight 1, a 1x1 connector
    initialised `N(0, 2 / (k * k * C_t))` with its batch normalisation at
    gamma 1, beta 0 (PyTorch's momentum 0.1, eps 1e-5), the pre-ReLU
    features after the stem (`preact_feats[1:]`). The distance equals the
    paper's partial L2 with the margin-ReLU target `max(t, m)`. Beyond the
    paper's formula, the code (as the authors' own,
    clovaai/overhaul-distillation) halves the weight of each shallower
    stage (`/ 2^(n - i)` for pair `i` of `n`), and sums over positions and
    channels but averages over the examples (the authors divide the sum by
    the batch size and by 1000, which the weight 0.001 carries here). Where
    this departs from the code:

    - The reference overrides `train()` so that the teacher also runs in
      training mode, as the authors' code does (its batch normalisation
      uses, and updates, batch statistics); the `Distiller` runs the frozen
      teacher in inference mode.
    - The reference indexes the margins by pair after dropping the
      shallowest stages of the network with more of them, so they shift
      when the two networks have different numbers of stages; here each
      margin belongs to its tapped teacher layer.

    Sample weights weight the per-example sums (`keras_unikd.losses.batch_mean`).
    The teacher's maps are read whole (`TeacherNeeds.feature_maps`) and the
    margins need the teacher model, so a teacher-output cache cannot serve
    this term.

    Args:
        teacher_features: Teacher pre-ReLU layer paths, one per pair, each a
            `BatchNormalization` or a residual `Add` fed by one
            (`keras_unikd.models` name them `stage{k}_preact`), or `"auto"`:
            the stage ends that a `Distiller` finds (`keras_unikd.auto_taps`),
            the deepest of each network paired, each replaced by the input of
            its ReLU; a stage end that is not a plain ReLU layer
            (`ReLU()`, `Activation("relu")`), such as a convolution with
            `activation="relu"`, is a `ValueError` asking for the names.
        student_features: Student pre-ReLU layer paths, as many, in the same
            order, or `"auto"` (as for the teacher).
        weight: Weight of the loss (0.001 in the reference).
        kernel_size: Odd kernel size of the connector convolution (1 in
            the reference).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import keras
    >>> from keras_unikd import Distiller, terms
    >>> def network(width, name):
    ...     inputs = keras.Input((8, 8, 3))
    ...     x = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv")(inputs)
    ...     x = keras.layers.BatchNormalization(name=f"{name}_stage1_preact")(x)
    ...     x = keras.layers.ReLU(name=f"{name}_stage1")(x)
    ...     x = keras.layers.GlobalAveragePooling2D()(x)
    ...     return keras.Model(inputs, keras.layers.Dense(4)(x), name=name)
    >>> ofd = OverhaulFeatureDistillation("t_stage1_preact", "s_stage1_preact")
    >>> distiller = Distiller(network(8, "t"), network(4, "s"), terms=[terms.CrossEntropy(), ofd])
    >>> distiller.loss_term_names, ofd.weight
    (['ce_loss', 'ofd_loss'], 0.001)
    >>> [round(float(m), 4) for m in ofd.margins[0][:2]]  # gamma 1, beta 0
    [-0.7979, -0.7979]
    """

    teacher_maps_reason = (
        "reads the teacher's full pre-ReLU maps {paths} (a distance at every position) "
        "and its batch normalisation"
    )

    def __init__(
        self, teacher_features, student_features, weight=0.001, kernel_size=1, name="ofd", **kwargs
    ):
        super().__init__(teacher_features, student_features, weight=weight, name=name, **kwargs)
        check_positive_int(f"{KIND} kernel_size", kernel_size)
        if kernel_size % 2 != 1:
            raise ValueError(
                f"{KIND} kernel_size must be odd (the connector keeps the map's size, "
                f"padding (k - 1) / 2 on each side); got {kernel_size!r}."
            )
        self.kernel_size = kernel_size

    def choose_auto_features(self, teacher, student):
        """`"auto"`: the deepest stage ends paired, each replaced by its ReLU's input."""
        super().choose_auto_features(teacher, student)
        for side, taps in (("teacher", teacher), ("student", student)):
            if taps is None:
                continue
            if taps.model is None:
                raise ValueError(
                    f"{KIND} reads pre-ReLU maps, and 'auto' finds them from the model's "
                    f"graph, which was not given. Give {side}_features by name. {PREACT_HINT}"
                )
            paths = getattr(self, f"{side}_features")
            setattr(
                self,
                f"{side}_features",
                tuple(_auto_pre_relu(taps.model, path, side) for path in paths),
            )

    def build(self, shapes):
        pairs = self.paired_shapes(shapes)
        if shapes.teacher_model is None:
            raise ValueError(
                f"{KIND} needs the teacher model (its margins come from the teacher's batch "
                "normalisation weights, and it reads the teacher's whole maps), but the "
                "teacher is a cache's. Distil from the teacher model."
            )
        self.connectors, self.margins = [], []
        for index, (teacher_path, teacher, _, student) in enumerate(pairs):
            self.margins.append(self._margin(shapes.teacher_model, teacher_path, teacher, index))
            self.connectors.append(self._connector(teacher[-1], student, index))

    def _margin(self, teacher_model, path, shape, index):
        """The non-trainable margins `(C,)` of teacher layer `path`."""
        values = batch_norm_margins(batch_norm_before(teacher_model, path))
        if values.shape != (shape[-1],):
            raise ValueError(
                f"The batch normalisation before teacher layer {path!r} has {len(values)} "
                f"channels but the layer outputs {shape[-1]}. {PREACT_HINT}"
            )
        margin = self.add_weight(
            shape=(shape[-1],), initializer="zeros", trainable=False, name=f"margin_{index}"
        )
        margin.assign(values.astype("float32"))
        return margin

    def _connector(self, channels, student_shape, index):
        """A bias-free convolution to the teacher's channels, then batch normalisation."""
        connector = keras.Sequential(
            [
                keras.layers.Conv2D(
                    channels,
                    self.kernel_size,
                    padding="same",
                    use_bias=False,
                    kernel_initializer=conv_initializer(),
                    dtype=self.dtype_policy,
                    name="conv",
                ),
                keras.layers.BatchNormalization(
                    momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype_policy, name="bn"
                ),
            ],
            name=f"{self.name}_connector_{index}",
        )
        connector.build((None, *student_shape[1:]))
        return connector

    def call(self, record):
        total = 0.0
        count = len(self.connectors)
        pairs = zip(self.teacher_features, self.student_features)
        for index, ((teacher_path, student_path), connector, margin) in enumerate(
            zip(pairs, self.connectors, self.margins)
        ):
            student = connector(record.student_features[student_path], training=record.training)
            student = ops.cast(student, "float32")
            teacher = ops.cast(record.teacher_features[teacher_path], "float32")
            if tuple(teacher.shape[1:3]) != tuple(student.shape[1:3]):
                teacher = adaptive_average_pool(teacher, student.shape[1:3])
            per_example = partial_l2(student, ops.stop_gradient(teacher), margin)
            stage = losses.batch_mean(per_example, record.sample_weight)
            total = total + stage / 2.0 ** (count - index - 1)
        return {self.loss_names[0]: total}

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


def _auto_pre_relu(model, path, side):
    try:
        return relu_input_path(model, path)
    except ValueError as error:
        raise ValueError(
            f"{KIND} with {side}_features='auto' reads the input of each stage end's ReLU: "
            f"{error} Or give {side}_features by name."
        ) from None
