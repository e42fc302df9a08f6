"""FitNetDistiller: the FitNet baseline, alone or with KD/DKD, as a Distiller."""

import keras

from keras_unikd.distiller import Distiller
from keras_unikd.keyword_form import logits_term
from keras_unikd.terms import CrossEntropy
from keras_unikd.terms import FitNetHint


@keras.saving.register_keras_serializable(package="keras_unikd")
class FitNetDistiller(Distiller):
    """Distils one intermediate feature with a hint loss, optionally plus KD.

    A `Distiller` with the terms `[CrossEntropy, <KD or DKD>, FitNetHint]`:
    a 1x1 regressor maps the student's feature to the teacher's channels and
    `hint_loss = hint_weight * mean((regressor(f_s) - f_t)^2)` (see
    `keras_unikd.terms.FitNetHint`). With `logits_loss="kd"` this is the
    "direct combination" of feature and logits distillation that UniKD
    argues against.

    Args:
        teacher: Trained functional or Sequential `keras.Model`.
        student: Functional or Sequential `keras.Model`.
        teacher_feature: Layer name (or `"outer/inner"` path) of the
            teacher's hint, a `(batch, H, W, C)` map.
        student_feature: Layer name of the student's guided layer.
        hint_weight: Weight of the hint loss (100 in mdistiller's CIFAR
            recipe).
        logits_loss: `None` (FitNet alone), `"kd"` or `"dkd"`.
        ce_weight: Weight of the cross-entropy.
        logits_weight: Weight of the logits term.
        temperature: Temperature of the logits term.
        dkd_alpha: DKD's target-class weight.
        dkd_beta: DKD's non-target weight.
        warmup_epochs: Warm-up of the logits term: epochs, or `"auto"`
            (1/12 of the planned run).
        **kwargs: Other `Distiller` arguments (`steps_per_epoch`, `name`).

    Example:

    ```python
    distiller = keras_unikd.FitNetDistiller(
        teacher, student, teacher_feature="stage2", student_feature="stage2",
        logits_loss="kd", warmup_epochs=0,
    )
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        teacher_feature,
        student_feature,
        hint_weight=100.0,
        logits_loss=None,
        ce_weight=1.0,
        logits_weight=1.0,
        temperature=4.0,
        dkd_alpha=1.0,
        dkd_beta=8.0,
        warmup_epochs="auto",
        **kwargs,
    ):
        fitnet_config = dict(
            teacher_feature=teacher_feature,
            student_feature=student_feature,
            hint_weight=hint_weight,
            logits_loss=logits_loss,
            ce_weight=ce_weight,
            logits_weight=logits_weight,
            temperature=temperature,
            dkd_alpha=dkd_alpha,
            dkd_beta=dkd_beta,
            warmup_epochs=warmup_epochs,
        )
        terms = [CrossEntropy(weight=ce_weight)]
        logits = logits_term(
            logits_loss, logits_weight, temperature, dkd_alpha, dkd_beta, warmup_epochs
        )
        if logits is not None:
            terms.append(logits)
        terms.append(FitNetHint(teacher_feature, student_feature, weight=hint_weight))
        super().__init__(teacher, student, terms=terms, **kwargs)
        self._fitnet_config = fitnet_config
        self.teacher_feature = teacher_feature
        self.student_feature = student_feature
        self.hint_weight = hint_weight

    def get_config(self):
        config = super().get_config()
        del config["terms"]  # rebuilt from the arguments
        return {**config, **self._fitnet_config}
