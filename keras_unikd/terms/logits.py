"""Terms on the logits alone: cross-entropy, KD and DKD."""

import keras

from keras_unikd import losses
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import check_positive


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

    def call(self, record):
        return {
            self.loss_names[0]: losses.cross_entropy(
                record.student_logits, record.labels, record.sample_weight
            )
        }


@keras.saving.register_keras_serializable(package="keras_unikd")
class KD(DistillationTerm):
    """Hinton's knowledge distillation, `T^2 * KL(p_teacher || p_student)` (`kd_loss`).

    Args:
        temperature: Softmax temperature `T` (> 0).
        weight: Weight of the loss.
        warmup_epochs: Epochs of linear warm-up (`0`: none).
        **kwargs: `DistillationTerm` arguments (`name`).

    Example:

    ```python
    distiller = keras_unikd.Distiller(
        teacher, student,
        terms=[terms.CrossEntropy(weight=0.1), terms.KD(temperature=4.0, weight=0.9)],
    )
    ```
    """

    def __init__(self, temperature=4.0, weight=1.0, warmup_epochs=0, name="kd", **kwargs):
        super().__init__(weight=weight, warmup_epochs=warmup_epochs, name=name, **kwargs)
        check_positive("KD temperature", temperature)
        self.temperature = temperature

    def call(self, record):
        return {
            self.loss_names[0]: losses.kd_loss(
                record.student_logits,
                record.teacher_logits,
                self.temperature,
                sample_weight=record.sample_weight,
            )
        }

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="keras_unikd")
class DKD(DistillationTerm):
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022) (`dkd_loss`).

    `T^2 * (alpha * TCKD + beta * NCKD)`: the KL between the binary
    target-vs-rest distributions and the KL between the distributions over
    the non-target classes (see `keras_unikd.losses.dkd_loss`).

    Args:
        alpha: Weight of the target-class term.
        beta: Weight of the non-target term (8 for ResNet32x4 -> ResNet8x4,
            2 for ResNet56 -> 20 and ResNet110 -> 32, 6 for WRN/VGG pairs in
            the DKD paper's CIFAR-100 configs).
        temperature: Softmax temperature `T` (> 0).
        weight: Weight of the loss.
        warmup_epochs: Epochs of linear warm-up (20 in the reference).
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
        name="dkd",
        **kwargs,
    ):
        super().__init__(weight=weight, warmup_epochs=warmup_epochs, name=name, **kwargs)
        check_positive("DKD temperature", temperature)
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature

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
            )
        }

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": self.temperature,
        }
