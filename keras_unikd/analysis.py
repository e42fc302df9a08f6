"""How closely a student follows its teacher: the UniKD paper's analyses and plots.

- `softmax_gaps`: per-example mean absolute difference between the teacher's
  and the student's softmax outputs; its empirical CDF (`empirical_cdf`,
  `plot_softmax_gap_cdf`) is the paper's Fig. 4 analogue: curves further up
  and left mean a student closer to its teacher.
- `correlation_gap`: `|corr(teacher logits) - corr(student logits)|` over
  classes (the paper's Fig. 5 analogue, `plot_correlation_gaps`): how well
  the student keeps the teacher's inter-class structure.
- `plot_training_curves`: test accuracy and loss terms per epoch of several
  runs (`History.history` dicts).

The functions take a teacher, a student and a dataset (a `tf.data.Dataset`
of `(x, y)` or `x` batches, or an array), so they work on any models. The
`*_from_logits` functions and `empirical_cdf` take arrays or tensors of any
Keras backend (a PyTorch tensor that requires grad, or one on a GPU, too).
Plotting needs matplotlib.
"""

import keras
import numpy as np


def _float64(values):
    """`values` (array, list or backend tensor) as a float64 NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(values), dtype="float64")


def predict_logits(model, dataset):
    """Logits of `model` on every example of `dataset`, as a NumPy array."""
    return _float64(model.predict(dataset, verbose=0))


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def softmax_gaps_from_logits(teacher_logits, student_logits):
    """Per-example mean over classes of `|softmax(teacher) - softmax(student)|`.

    Example:

    >>> import numpy as np
    >>> gaps = softmax_gaps_from_logits(np.zeros((1, 2)), np.array([[0.0, np.log(3.0)]]))
    >>> [round(float(g), 6) for g in gaps]
    [0.25]
    """
    teacher = _softmax(_float64(teacher_logits))
    student = _softmax(_float64(student_logits))
    return np.abs(teacher - student).mean(axis=-1)


def softmax_gaps(teacher, student, dataset):
    """`softmax_gaps_from_logits` of two models on a dataset."""
    return softmax_gaps_from_logits(
        predict_logits(teacher, dataset), predict_logits(student, dataset)
    )


def empirical_cdf(values):
    """`(sorted values, fraction of values <= each)` for plotting a CDF."""
    ordered = np.sort(_float64(values))
    return ordered, np.arange(1, len(ordered) + 1) / len(ordered)


def correlation_gap_from_logits(teacher_logits, student_logits):
    """`|corr(teacher) - corr(student)|`, class-by-class Pearson correlations.

    Each argument is `(num_examples, num_classes)`; the result is
    `(num_classes, num_classes)` with a zero diagonal.
    """
    teacher = np.corrcoef(_float64(teacher_logits), rowvar=False)
    student = np.corrcoef(_float64(student_logits), rowvar=False)
    return np.abs(teacher - student)


def correlation_gap(teacher, student, dataset):
    """`correlation_gap_from_logits` of two models on a dataset."""
    return correlation_gap_from_logits(
        predict_logits(teacher, dataset), predict_logits(student, dataset)
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_softmax_gap_cdf(gaps_by_method, path, title=None):
    """One CDF curve of the teacher-student softmax gap per method; saves a PNG."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for method, gaps in gaps_by_method.items():
        gaps = _float64(gaps)
        values, fractions = empirical_cdf(gaps)
        axis.plot(values, fractions, label=f"{method} (mean {np.mean(gaps):.4f})")
    axis.set_xscale("log")
    axis.set_xlabel("mean |softmax(teacher) - softmax(student)| per example")
    axis.set_ylabel("fraction of test examples")
    axis.set_title(title or "Teacher-student output gap (CDF)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_correlation_gaps(gaps_by_method, path, class_names=None):
    """Heat maps of `|corr(teacher) - corr(student)|`, one per method; saves a PNG."""
    plt = _pyplot()
    gaps_by_method = {method: _float64(gap) for method, gap in gaps_by_method.items()}
    count = len(gaps_by_method)
    figure, axes = plt.subplots(1, count, figsize=(4.6 * count, 4.2), squeeze=False)
    vmax = max(float(gap.max()) for gap in gaps_by_method.values())
    for axis, (method, gap) in zip(axes[0], gaps_by_method.items()):
        image = axis.imshow(gap, cmap="viridis", vmin=0.0, vmax=vmax)
        axis.set_title(f"{method}: mean {gap.mean():.3f}")
        if class_names is not None:
            ticks = np.arange(len(class_names))
            axis.set_xticks(ticks, class_names, rotation=90, fontsize=7)
            axis.set_yticks(ticks, class_names, fontsize=7)
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle("|corr(teacher logits) - corr(student logits)|")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_training_curves(histories_by_method, path, metrics=None):
    """Per-epoch curves of several runs, one panel per metric; saves a PNG.

    Args:
        histories_by_method: `{method: History.history}`.
        path: Output PNG path.
        metrics: Metric names to plot; by default `val_accuracy` and every
            loss term that some run reports.
    """
    plt = _pyplot()
    if metrics is None:
        names = {name for history in histories_by_method.values() for name in history}
        losses = sorted(n for n in names if n.endswith("_loss") and not n.startswith("val_"))
        metrics = ["val_accuracy"] + losses
    columns = 3
    rows = -(-len(metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    # One colour per method across all panels.
    colors = dict(zip(histories_by_method, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for axis, metric in zip(axes.flat, metrics):
        for method, history in histories_by_method.items():
            if metric in history:
                epochs = np.arange(1, len(history[metric]) + 1)
                axis.plot(
                    epochs,
                    history[metric],
                    marker="o",
                    markersize=3,
                    label=method,
                    color=colors[method],
                )
        axis.set_title(metric)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
