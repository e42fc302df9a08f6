"""Deprecated: `FitNetDistiller`, the FitNet method as a Distiller subclass.

FitNet is a method of the method table (`keras_unikd.methods`): its terms
are `[CrossEntropy, FitNetHint]` (`method_terms("fitnet", ...)`, with KD:
`"fitnet+kd"`), given to a plain `Distiller`. The class stays so that code
and `.keras` files that name it keep working; constructing it warns.
"""

import warnings

import keras

from keras_unikd import methods
from keras_unikd.distiller import Distiller


@keras.saving.register_keras_serializable(package="keras_unikd")
class FitNetDistiller(Distiller):
    """Deprecated: use `Distiller(teacher, student, terms=method_terms("fitnet", ...))`.

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
            (a quarter of the planned run, at most 20 epochs).
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
        warnings.warn(
            "FitNetDistiller is deprecated: FitNet is a method of the method table. Use "
            "Distiller(teacher, student, terms=keras_unikd.methods.method_terms('fitnet', "
            "teacher_feature=..., student_feature=...)) ('fitnet+kd' adds KD).",
            DeprecationWarning,
            stacklevel=2,
        )
        ce, hint = methods.method_terms(
            "fitnet",
            teacher_feature=teacher_feature,
            student_feature=student_feature,
            hint_weight=hint_weight,
            ce_weight=ce_weight,
        )
        terms = [ce, hint]
        if logits_loss is not None:
            settings = dict(
                logits_weight=logits_weight, temperature=temperature, warmup_epochs=warmup_epochs
            )
            if logits_loss == "dkd":
                settings.update(dkd_alpha=dkd_alpha, dkd_beta=dkd_beta)
            if logits_loss not in ("kd", "dkd"):
                raise ValueError(
                    f"Unknown logits_loss={logits_loss!r}; expected one of None, 'kd', 'dkd'."
                )
            terms.insert(1, methods.method_terms(logits_loss, **settings)[1])
        super().__init__(teacher, student, terms=terms, **kwargs)
        self._fitnet_config = fitnet_config
        self.teacher_feature = teacher_feature
        self.student_feature = student_feature
        self.hint_weight = hint_weight

    def get_config(self):
        config = super().get_config()
        del config["terms"]  # rebuilt from the arguments
        return {**config, **self._fitnet_config}
