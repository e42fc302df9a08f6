"""Variational information distillation (Ahn et al., CVPR 2019): a Gaussian likelihood per stage."""

import math

import keras
from keras import ops

from keras_unikd import losses
from keras_unikd.initializers import TorchDefaultUniform
from keras_unikd.layers.pooling import adaptive_average_pool
from keras_unikd.terms.stages import StagePairTerm
from keras_unikd.validation import check_bool
from keras_unikd.validation import check_non_negative

KIND = "VariationalInformation"


@keras.saving.register_keras_serializable(package="keras_unikd")
class VariationalInformation(StagePairTerm):
    """Variational information distillation over pairs of stages (`vid_loss`).

    For each pair `(teacher layer, student layer)` of tapped
    `(batch, H, W, C)` maps, the larger map is average-pooled to the
    smaller's size (PyTorch's `adaptive_avg_pool2d`), a regressor
    `mu = conv1x1(ReLU(conv1x1(ReLU(conv1x1(f_s)))))` (no biases;
    student channels to the teacher's `C_t`, then `C_t` to `C_t` twice)
    predicts the teacher's map, and with a variance per teacher channel
    `sigma^2_c = softplus(alpha_c) + eps`, the negative log-likelihood of the
    teacher's map under `N(mu, sigma^2)` (without its constant) is

    `vid_loss = weight * sum_pairs mean_{examples, positions, channels}
    0.5 * ((mu - f_t)^2 / sigma^2 + log sigma^2)`.

    This follows the reference code (megvii-research/mdistiller,
    `distillers/VID.py`, which produced the published CIFAR-100 baseline):
    weight 1 next to a cross-entropy of weight 1, `eps = 1e-5`, the stage
    outputs after their ReLU after the stem (`feats[1:]`), and `alpha`
    initialised to `log(exp(init_pred_var - eps) - 1)`, so the predicted
    variance starts at exactly `init_pred_var = 5` (`softplus(alpha) = 5 -
    eps`, plus `eps`). The regressor convolutions keep PyTorch's default
    initialisation (`TorchDefaultUniform`: Kaiming-uniform with
    `a = sqrt(5)`, `U(+-1/sqrt(fan_in))`). Where the code departs from the
    paper:

    - The paper learns the variance. The code keeps `alpha` in a plain
      Python list (not an `nn.ParameterList`) and leaves it out of
      `get_learnable_parameters`, so the optimizer never updates it: the
      variance stays at `init_pred_var` throughout training. The default
      `learn_variance=False` does the same (`alpha` is a non-trainable
      weight); `learn_variance=True` trains it, as the paper describes.
    - The code pools to a square of the smaller height; here to the
      smaller map's height and width (the same for square maps).

    Sample weights weight the per-example means (`keras_unikd.losses.batch_mean`).
    The teacher's maps are read whole (`TeacherNeeds.feature_maps`), so a
    teacher-output cache cannot serve this term.

    Args:
        teacher_features: Teacher layer paths, one per pair, or `"auto"`:
            the stage ends that a `Distiller` finds (`keras_unikd.auto_taps`),
            the deepest of each network paired (on the CIFAR ResNets the
            stem shares stage 1's resolution, so these are the reference's
            `feats[1:]`).
        student_features: Student layer paths, as many, in the same order,
            or `"auto"`.
        weight: Weight of the loss (1 in the reference).
        eps: The variance floor added to the softplus (1e-5 in the reference).
        init_pred_var: The predicted variance at the start (5 in the
            reference); it must exceed `eps`.
        learn_variance: Whether the variance is trained (the paper) or stays
            at `init_pred_var` (the reference code, the default).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import keras, numpy as np
    >>> from keras_unikd import Distiller
    >>> def network(width, name):
    ...     inputs = keras.Input((8, 8, 3))
    ...     x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
    ...                             name=f"{name}_stage1")(inputs)
    ...     x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu",
    ...                             name=f"{name}_stage2")(x)
    ...     x = keras.layers.GlobalAveragePooling2D()(x)
    ...     return keras.Model(inputs, keras.layers.Dense(4)(x), name=name)
    >>> vid = VariationalInformation(["t_stage1", "t_stage2"], ["s_stage1", "s_stage2"])
    >>> distiller = Distiller(network(8, "t"), network(4, "s"), terms=[vid])
    >>> distiller.loss_term_names
    ['vid_loss']
    >>> [round(float(v), 4) for v in vid.variances()[0][:2]]
    [5.0, 5.0]
    """

    teacher_maps_reason = (
        "reads the teacher's full feature maps {paths} (their likelihood at every position)"
    )

    def __init__(
        self,
        teacher_features,
        student_features,
        weight=1.0,
        eps=1e-5,
        init_pred_var=5.0,
        learn_variance=False,
        name="vid",
        **kwargs,
    ):
        super().__init__(teacher_features, student_features, weight=weight, name=name, **kwargs)
        check_non_negative(f"{KIND} eps", eps)
        check_non_negative(f"{KIND} init_pred_var", init_pred_var)
        if not init_pred_var > eps:
            raise ValueError(
                f"{KIND} init_pred_var must be > eps (the variance is softplus(alpha) + eps); "
                f"got init_pred_var={init_pred_var!r}, eps={eps!r}."
            )
        self.eps = eps
        self.init_pred_var = init_pred_var
        self.learn_variance = check_bool(f"{KIND} learn_variance", learn_variance)

    def build(self, shapes):
        self.regressors, self.log_scales, self._sizes = [], [], []
        start = math.log(math.expm1(self.init_pred_var - self.eps))
        for index, (teacher_path, teacher, student_path, student) in enumerate(
            self.paired_shapes(shapes)
        ):
            self._sizes.append(_common_size(teacher_path, teacher, student_path, student))
            self.regressors.append(self._regressor(teacher[-1], student, index))
            self.log_scales.append(
                self.add_weight(
                    shape=(teacher[-1],),
                    initializer=keras.initializers.Constant(start),
                    trainable=self.learn_variance,
                    name=f"log_scale_{index}",
                )
            )

    def _regressor(self, channels, student_shape, index):
        """Three bias-free 1x1 convolutions with ReLUs between, PyTorch's default init."""

        def conv(position):
            # One initializer per kernel: an unseeded one repeats its draws.
            return keras.layers.Conv2D(
                channels,
                1,
                use_bias=False,
                kernel_initializer=TorchDefaultUniform(),
                dtype=self.dtype_policy,
                name=f"conv{position}",
            )

        regressor = keras.Sequential(
            [conv(1), keras.layers.ReLU(), conv(2), keras.layers.ReLU(), conv(3)],
            name=f"{self.name}_regressor_{index}",
        )
        regressor.build((None, *student_shape[1:]))
        return regressor

    def variances(self):
        """The predicted variance per teacher channel of each pair, `softplus(alpha) + eps`."""
        return [ops.softplus(ops.cast(alpha, "float32")) + self.eps for alpha in self.log_scales]

    def call(self, record):
        total = 0.0
        pairs = zip(self.teacher_features, self.student_features)
        for (teacher_path, student_path), size, regressor, variance in zip(
            pairs, self._sizes, self.regressors, self.variances()
        ):
            student = _pooled(record.student_features[student_path], size)
            teacher = _pooled(ops.cast(record.teacher_features[teacher_path], "float32"), size)
            mean = ops.cast(regressor(student), "float32")
            nll = 0.5 * (
                ops.square(mean - ops.stop_gradient(teacher)) / variance + ops.log(variance)
            )
            per_example = ops.mean(nll, axis=(1, 2, 3))
            total = total + losses.batch_mean(per_example, record.sample_weight)
        return {self.loss_names[0]: total}

    def get_config(self):
        return {
            **super().get_config(),
            "eps": self.eps,
            "init_pred_var": self.init_pred_var,
            "learn_variance": self.learn_variance,
        }


def _common_size(teacher_path, teacher, student_path, student):
    """The `(H, W)` both maps of a pair are pooled to: the smaller map's."""
    sizes = (tuple(teacher[1:3]), tuple(student[1:3]))
    if None in sizes[0] + sizes[1]:
        raise ValueError(
            f"{KIND} needs maps of known size; got {teacher_path!r} {tuple(teacher)} and "
            f"{student_path!r} {tuple(student)}."
        )
    small = min(sizes)
    if any(s > b for s, b in zip(small, max(sizes))):
        raise ValueError(
            f"{KIND} pools the larger map to the smaller's size, but {teacher_path!r} is "
            f"{sizes[0]} and {student_path!r} {sizes[1]}: neither is the smaller in both "
            "height and width. Tap stages of matching shapes."
        )
    return small


def _pooled(feature, size):
    """`feature` average-pooled to `size` (as is when it has that size)."""
    if tuple(feature.shape[1:3]) == tuple(size):
        return feature
    return adaptive_average_pool(feature, size)
