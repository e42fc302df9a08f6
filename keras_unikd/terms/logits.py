"""Terms on the logits alone: cross-entropy, KD, DKD and MLKD."""

import keras
from keras import ops

from keras_unikd import losses
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import TeacherNeeds
from keras_unikd.validation import check_bool
from keras_unikd.validation import check_choice
from keras_unikd.validation import check_non_negative
from keras_unikd.validation import check_positive


@keras.saving.register_keras_serializable(package="keras_unikd")
class CrossEntropy(DistillationTerm):
    """The student's task loss: sparse cross-entropy on its logits (`ce_loss`).

    Args:
        weight: Weight of the loss.
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import numpy as np
    >>> term = CrossEntropy(weight=0.5)
    >>> term.loss_names
    ('ce_loss',)
    """

    def __init__(self, weight=1.0, name="ce", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)

    def teacher_needs(self):
        """Nothing: the cross-entropy reads the labels, not the teacher."""
        return TeacherNeeds(views=self.views)

    def call(self, record):
        return {
            self.loss_names[0]: losses.cross_entropy(
                record.student_logits, record.labels, record.sample_weight
            )
        }


@keras.saving.register_keras_serializable(package="keras_unikd")
class KD(DistillationTerm):
    """Hinton's knowledge distillation, `T^2 * KL(p_teacher || p_student)` (`kd_loss`).

    `p = softmax(z / T)`; with `logit_standardization=True`,
    `p = softmax(zscore(z) / T)` with `zscore(z) = (z - mean(z)) / (1e-7 +
    std(z))` over the classes (Sun et al., "Logit Standardization in
    Knowledge Distillation", CVPR 2024; `keras_unikd.losses.standardize_logits`),
    and the loss keeps its `T^2` factor.

    The reference's CIFAR-100 recipe for KD with standardization
    (sunshangquan/logit-standardization-KD: `--logit-stand --base-temp 2
    --kd-weight 9` in its README, which `tools/train.py` turns into
    `KD.TEMPERATURE = 2` and `KD.LOSS.KD_WEIGHT = 9`; `KD.LOSS.CE_WEIGHT` stays
    at 0.1 in `mdistiller/engine/cfg.py`) is `temperature=2.0, weight=9.0`
    with `CrossEntropy(weight=0.1)`: 76.62% for ResNet32x4 -> ResNet8x4 (plain
    KD: 73.33%; log `logs/KD/kd,resnet32x4,resnet8x4,2,9.txt`, named
    `KD_TYPE,TEACHER,STUDENT,BASE_TEMPERATURE,KD_WEIGHT`). Other pairs use a
    temperature of 2 to 4 and a weight of 1 to 12 (the other log names).
    Our defaults stay those of plain KD.

    Args:
        temperature: Softmax temperature `T` (> 0).
        weight: Weight of the loss.
        warmup_epochs: Epochs of linear warm-up (`0`: none).
        logit_standardization: Whether to z-score both logit vectors before
            the softmax.
        **kwargs: `DistillationTerm` arguments (`name`).

    Example:

    ```python
    distiller = keras_unikd.Distiller(
        teacher, student,
        terms=[terms.CrossEntropy(weight=0.1), terms.KD(temperature=4.0, weight=0.9)],
    )
    # With logit standardization, the reference's CIFAR-100 values:
    terms=[
        terms.CrossEntropy(weight=0.1),
        terms.KD(temperature=2.0, weight=9.0, logit_standardization=True),
    ]
    ```

    >>> KD(temperature=2.0, weight=9.0, logit_standardization=True).get_config()[
    ...     "logit_standardization"]
    True
    """

    def __init__(
        self,
        temperature=4.0,
        weight=1.0,
        warmup_epochs=0,
        logit_standardization=False,
        name="kd",
        **kwargs,
    ):
        super().__init__(weight=weight, warmup_epochs=warmup_epochs, name=name, **kwargs)
        check_positive("KD temperature", temperature)
        check_bool("KD logit_standardization", logit_standardization)
        self.temperature = temperature
        self.logit_standardization = logit_standardization

    def call(self, record):
        return {
            self.loss_names[0]: losses.kd_loss(
                record.student_logits,
                record.teacher_logits,
                self.temperature,
                sample_weight=record.sample_weight,
                standardize=self.logit_standardization,
            )
        }

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "logit_standardization": self.logit_standardization,
        }


@keras.saving.register_keras_serializable(package="keras_unikd")
class DKD(DistillationTerm):
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022) (`dkd_loss`).

    `T^2 * (alpha * TCKD + beta * NCKD)`: the KL between the binary
    target-vs-rest distributions and the KL between the distributions over
    the non-target classes (see `keras_unikd.losses.dkd_loss`), all from
    `softmax(z / T)`. With `logit_standardization=True` the logits are first
    z-scored over all the classes, `(z - mean(z)) / (1e-7 + std(z))`, then
    divided by `T` and masked (Sun et al., CVPR 2024; the order of `dkd_loss`
    in `mdistiller/distillers/DKD.py` of sunshangquan/logit-standardization-KD);
    the `T^2` factor stays.

    The reference's CIFAR-100 recipe for DKD with standardization (README:
    `--logit-stand --base-temp 2 --kd-weight 9`; `tools/train.py` multiplies
    `DKD.ALPHA` and `DKD.BETA` by the KD weight and sets `DKD.T = 2`; the
    other values are `mdistiller/engine/cfg.py`'s: alpha 1, beta 8, CE weight
    1, warm-up 20) for ResNet32x4 -> ResNet8x4 is alpha 9, beta 72, `T = 2`,
    i.e. `DKD(alpha=1.0, beta=8.0, temperature=2.0, weight=9.0,
    warmup_epochs=20, logit_standardization=True)` with `CrossEntropy()`:
    77.01% (plain DKD: 76.32%; log `logs/DKD/dkd,resnet32x4,resnet8x4,2,9.txt`).
    Other pairs' log names give `T`, the KD weight and beta (e.g.
    `dkd,resnet56,resnet20,3,18,2.0`). Our defaults stay those of plain DKD.

    Args:
        alpha: Weight of the target-class term.
        beta: Weight of the non-target term (8 for ResNet32x4 -> ResNet8x4,
            2 for ResNet56 -> 20 and ResNet110 -> 32, 6 for WRN/VGG pairs in
            the DKD paper's CIFAR-100 configs).
        temperature: Softmax temperature `T` (> 0).
        weight: Weight of the loss.
        warmup_epochs: Epochs of linear warm-up (20 in the reference).
        logit_standardization: Whether to z-score both logit vectors before
            the temperature and the target mask.
        **kwargs: `DistillationTerm` arguments (`name`).

    Example:

    >>> term = DKD(alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=20)
    >>> term.loss_names
    ('dkd_loss',)
    """

    def __init__(
        self,
        alpha=1.0,
        beta=8.0,
        temperature=4.0,
        weight=1.0,
        warmup_epochs=20,
        logit_standardization=False,
        name="dkd",
        **kwargs,
    ):
        super().__init__(weight=weight, warmup_epochs=warmup_epochs, name=name, **kwargs)
        check_non_negative("DKD alpha", alpha)
        check_non_negative("DKD beta", beta)
        check_positive("DKD temperature", temperature)
        check_bool("DKD logit_standardization", logit_standardization)
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.logit_standardization = logit_standardization

    def call(self, record):
        return {
            self.loss_names[0]: losses.dkd_loss(
                record.student_logits,
                record.teacher_logits,
                record.labels,
                alpha=self.alpha,
                beta=self.beta,
                temperature=self.temperature,
                sample_weight=record.sample_weight,
                standardize=self.logit_standardization,
            )
        }

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": self.temperature,
            "logit_standardization": self.logit_standardization,
        }


MLKD_TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)
# The classes and batch size MLKD's reference recipe was tuned at (CIFAR-100).
MLKD_REFERENCE_CLASSES = 100
MLKD_REFERENCE_BATCH = 64
MLKD_LEVEL_SCALINGS = ("balanced", "reference")


def mlkd_level_scales(batch_size, num_classes):
    """The factors of MLKD's class and batch levels, `(class, batch)`, for `B` and `K`.

    At MLKD's temperatures (2 to 6) the probabilities are near uniform:
    `p = (1 + e) / K` with deviations `e` of order one, summing to zero over
    the classes. Then

    - the class Gram matrix `P^T P` has entries `(1 / K^2) sum_i (1 + e_ik)
      (1 + e_il)`; their difference between teacher and student is, to first
      order, a sum over the `B` examples of independent deviations, so its
      square grows like `B / K^4`; the `K^2` entries, divided by `K` as the
      reference does, make the class level grow like `B / K^3`;
    - the batch Gram matrix `P P^T` has entries `1 / K + (1 / K^2) sum_k e_ik
      e_jk` (the first-order terms cancel); the `B` diagonal entries differ by
      `O(1 / K)` each, the others by a sum over `K` classes of independent
      products, `O(K^-3/2)`; the reference's sum over `B^2` entries divided
      by `B` grows like `1 / K^2 + B / K^3 = (1 + B / K) / K^2`;
    - the instance level, a mean over the batch of KLs of order `e^2`, does
      not grow with either.

    So the levels keep the balance they have at the reference's `K = 100`
    and `B = 64` when the class level is multiplied by
    `(64 / B) (K / 100)^3` and the batch level by
    `(K / 100)^2 (1 + 64 / 100) / (1 + B / K)`: both are exactly 1 there.

    Args:
        batch_size: `B`, a Python number or a scalar tensor.
        num_classes: `K`, a Python number.

    Returns:
        `(class_scale, batch_scale)`, float32 scalars.

    Example:

    >>> [round(float(scale), 6) for scale in mlkd_level_scales(64, 100)]
    [1.0, 1.0]
    >>> [round(float(scale), 6) for scale in mlkd_level_scales(128, 10)]
    [0.0005, 0.001188]
    """
    batch = ops.cast(batch_size, "float32")
    classes = float(num_classes)
    reference_classes, reference_batch = MLKD_REFERENCE_CLASSES, MLKD_REFERENCE_BATCH
    class_scale = (reference_batch * classes**3) / (batch * reference_classes**3)
    batch_scale = (classes**3 * (reference_classes + reference_batch)) / (
        reference_classes**3 * (classes + batch)
    )
    return class_scale, batch_scale


@keras.saving.register_keras_serializable(package="keras_unikd")
class MLKD(DistillationTerm):
    """Multi-level logit distillation (Jin et al., CVPR 2023).

    MLKD aligns the teacher's and the student's predictions at three levels,
    each at every temperature `T` of `temperatures` ("prediction
    augmentation"), on both views of two-view batches `((weak, strong),
    labels)` (`views=2`, the method's setting; `views=1` keeps the weak-view
    part for single-view batches). With `P = softmax(z / T)` (`B x K` for a
    batch of `B` examples and `K` classes):

    - instance level (`mlkd_instance_loss`):
      `sum_T (1 / B) sum_i w_i T^2 KL(P_t[i] || P_s[i])`;
    - class level (`mlkd_class_loss`), on the class Gram matrices
      `G = P^T P` (`K x K`): `sum_T sum_k c_k sum_l (G_t - G_s)[k, l]^2 / K`;
    - batch level (`mlkd_batch_loss`), on the example Gram matrices
      `G = P P^T` (`B x B`): `sum_T sum_i w_i sum_j (G_t - G_s)[i, j]^2 / B`.

    The confidence masks come from the teacher's weak-view probabilities
    `softmax(z_t)`: the example mask `m_i = [max_k p_ik <= median_i]` and
    the class mask `c_k = [sum_i p_ik <= median_k]`
    (`keras_unikd.losses.confidence_masks`). On the weak view `w_i = m_i`
    at the instance and batch levels and the class level is weighted by
    `c`; on the strong view the instance and class levels are unmasked and
    the batch level is weighted by `m`, as in the reference code. Sample
    weights multiply `w` (and weight the examples inside the class Gram
    matrices). Each level is summed over the temperatures and the views,
    multiplied by its own weight (`instance_weight`, `class_weight`,
    `batch_weight`) and by the term's `weight`.

    With `logit_standardization=True` the instance level z-scores both
    logit vectors before the temperature softmax (Sun et al., CVPR 2024;
    as `MLKD.py` of sunshangquan/logit-standardization-KD, where the Gram
    levels and the masks use the raw logits).

    Differences from the reference code (`mdistiller/distillers/KD_ours.py`
    of Jin-Ying/Multi-Level-Logit-Distillation, and its copy in the UniKD
    authors' fork, FabienCode/mdistiller `UniKDMLReview.py`), which this term
    does not copy:

    - there the per-example reduction is commented out, so each mask
      multiplies a loss already averaged over the batch and only scales it
      by the fraction of ones (about one half); here the masks select the
      examples and classes whose losses count;
    - there the strong view's terms at `T = 2` and `T = 6` use the weak
      view's logits; here every strong-view term uses the strong logits;
    - there only the weak view's class- and batch-level terms enter the loss
      (the fork adds the strong class-level term from 2023-11-06); here both
      views of every level do.

    Reference recipes, CIFAR-100 (MLKD's `mdistiller/engine/cfg.py` and
    `configs/cifar100/ours/*.yaml`): `T` list `[4, 3, 5, 2, 6]`, MLKD weight
    0.9 on every level with `CrossEntropy(weight=0.1, views=2)`, 240 epochs
    (ResNet32x4 -> ResNet8x4: 77.08%). With logit standardization
    (sunshangquan/logit-standardization-KD, `tools/train.py`: `--logit-stand
    --base-temp 2 --kd-weight 9`): the first temperature becomes 2
    (`[2, 3, 5, 2, 6]`) and the weight 9 (78.28%). The UniKD authors'
    UniMLKD recipe weights every level and the cross-entropy by 1.

    Any batch size, any class count (`level_scaling`): the reference's
    class- and batch-level losses are sums over the batch, tuned at 100
    classes and batch 64; they grow with the batch size and shrink fast with
    the number of classes (on Fashion-MNIST, 10 classes at batch 128, with
    every level weighted 1, the students diverged to chance in their first
    epoch). By default (`"balanced"`) the class level is multiplied by
    `(64 / B) (K / 100)^3` and the batch level by
    `(K / 100)^2 (1 + 64 / 100) / (1 + B / K)` for a batch of `B` examples
    and `K` classes (`mlkd_level_scales` derives them): exactly 1 at the
    reference's 100 classes and batch 64, and the same balance between the
    three levels elsewhere. `level_scaling="reference"` keeps the
    reference's unscaled sums (the presets, which reproduce its recipes,
    use it: the last, smaller batch of an epoch is scaled as the reference
    scales it).

    Args:
        temperatures: Sequence of positive temperatures.
        weight: Weight of all three levels.
        instance_weight: Weight of the instance level.
        class_weight: Weight of the class level.
        batch_weight: Weight of the batch level.
        logit_standardization: Whether to z-score the logits of the
            instance level.
        level_scaling: `"balanced"` (the class and batch levels scaled for
            the batch size and class count, see above) or `"reference"`.
        views: 2 (the method's two views) or 1.
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    ```python
    distiller = keras_unikd.Distiller(
        teacher, student,
        terms=[terms.CrossEntropy(weight=0.1, views=2), terms.MLKD(weight=0.9)],
    )
    distiller.fit(two_view_dataset)  # yields ((weak, strong), labels)
    ```

    >>> MLKD().loss_names
    ('mlkd_instance_loss', 'mlkd_class_loss', 'mlkd_batch_loss')
    """

    combines_views = True

    def __init__(
        self,
        temperatures=MLKD_TEMPERATURES,
        weight=1.0,
        instance_weight=1.0,
        class_weight=1.0,
        batch_weight=1.0,
        logit_standardization=False,
        level_scaling="balanced",
        views=2,
        name="mlkd",
        **kwargs,
    ):
        super().__init__(weight=weight, views=views, name=name, **kwargs)
        if isinstance(temperatures, (int, float)) or not len(temperatures):
            raise ValueError(
                f"MLKD temperatures must be a non-empty list of numbers > 0, "
                f"e.g. [4, 3, 5, 2, 6]; got {temperatures!r}."
            )
        for temperature in temperatures:
            check_positive("MLKD temperature", temperature)
        for argument, value in (
            ("instance_weight", instance_weight),
            ("class_weight", class_weight),
            ("batch_weight", batch_weight),
        ):
            check_non_negative(f"MLKD {argument}", value)
        check_bool("MLKD logit_standardization", logit_standardization)
        check_choice("MLKD level_scaling", level_scaling, MLKD_LEVEL_SCALINGS)
        self.level_scaling = level_scaling
        self.temperatures = tuple(float(t) for t in temperatures)
        self.instance_weight = instance_weight
        self.class_weight = class_weight
        self.batch_weight = batch_weight
        self.logit_standardization = logit_standardization

    @property
    def loss_names(self):
        return tuple(f"{self.name}_{level}_loss" for level in ("instance", "class", "batch"))

    def _levels(self, record, example_weight, class_weight, batch_weight):
        """The three levels of one view, summed over the temperatures."""
        levels = [0.0, 0.0, 0.0]
        for temperature in self.temperatures:
            per_example = losses.kd_per_example(
                record.student_logits,
                record.teacher_logits,
                temperature,
                standardize=self.logit_standardization,
            )
            levels[0] += losses.batch_mean(per_example, example_weight)
            levels[1] += losses.class_gram_loss(
                record.student_logits,
                record.teacher_logits,
                temperature,
                class_weight=class_weight,
                sample_weight=record.sample_weight,
            )
            levels[2] += losses.batch_gram_loss(
                record.student_logits, record.teacher_logits, temperature, batch_weight
            )
        return levels

    def call(self, record):
        example_mask, class_mask = losses.confidence_masks(record.teacher_logits)
        weights = record.sample_weight
        masked = example_mask if weights is None else example_mask * ops.cast(weights, "float32")
        levels = self._levels(record, masked, class_mask, masked)
        if record.strong is not None:
            strong = self._levels(record.strong, weights, None, masked)
            levels = [weak + other for weak, other in zip(levels, strong)]
        level_weights = (self.instance_weight, self.class_weight, self.batch_weight)
        if self.level_scaling == "balanced":
            logits = record.teacher_logits
            class_scale, batch_scale = mlkd_level_scales(ops.shape(logits)[0], logits.shape[-1])
            level_weights = (
                self.instance_weight,
                self.class_weight * class_scale,
                self.batch_weight * batch_scale,
            )
        return {
            name: level * level_weight
            for name, level, level_weight in zip(self.loss_names, levels, level_weights)
        }

    def get_config(self):
        return {
            **super().get_config(),
            "temperatures": list(self.temperatures),
            "instance_weight": self.instance_weight,
            "class_weight": self.class_weight,
            "batch_weight": self.batch_weight,
            "logit_standardization": self.logit_standardization,
            "level_scaling": self.level_scaling,
        }

    def tuning_hint(self, loss_name):
        level = loss_name[len(self.name) + 1 : -len("_loss")]
        hint = f"its {level} level (MLKD({level}_weight={getattr(self, level + '_weight'):g}) now)"
        if level != "instance" and self.level_scaling == "reference":
            hint += ", or level_scaling='balanced' (the levels scaled for the batch and classes)"
        return hint

    @classmethod
    def from_config(cls, config):
        """Rebuilds the term; a config saved before `level_scaling` existed gets
        `"reference"`, the scaling it was trained with."""
        return cls(**{"level_scaling": "reference", **config})
