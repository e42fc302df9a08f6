"""Container for small in-memory image classification datasets."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """An in-memory image classification dataset with a train/test split.

    Images are stored as `uint8` arrays shaped `(N, H, W, C)` (channels
    last) and labels as `int32` arrays shaped `(N,)`.

    Args:
        name: Short dataset name, e.g. `"fashion_mnist"` or `"digits"`.
        x_train: Training images, `uint8`, shape `(N_train, H, W, C)`.
        y_train: Training labels, `int32`, shape `(N_train,)`.
        x_test: Test images, `uint8`, shape `(N_test, H, W, C)`.
        y_test: Test labels, `int32`, shape `(N_test,)`.
        num_classes: Number of classes.
        source: Human-readable description of where the data came from
            (e.g. the directory the files were read from).

    Example:

    >>> import numpy as np
    >>> ds = ImageDataset(
    ...     name="toy",
    ...     x_train=np.zeros((4, 8, 8, 1), "uint8"),
    ...     y_train=np.array([0, 1, 0, 1], "int32"),
    ...     x_test=np.zeros((2, 8, 8, 1), "uint8"),
    ...     y_test=np.array([0, 1], "int32"),
    ...     num_classes=2,
    ...     source="in-memory",
    ... )
    >>> ds.image_shape
    (8, 8, 1)
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str

    def __post_init__(self):
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.ndim != 4:
                raise ValueError(
                    f"ImageDataset '{self.name}': x_{split} must be a numpy "
                    "array shaped (N, H, W, C); got "
                    f"{getattr(x, 'shape', type(x))}. Add a trailing "
                    "channel axis with `x[..., None]` for grayscale images."
                )
            if not isinstance(y, np.ndarray) or y.ndim != 1:
                raise ValueError(
                    f"ImageDataset '{self.name}': y_{split} must be a 1-D "
                    f"numpy array of integer labels; got "
                    f"{getattr(y, 'shape', type(y))}."
                )
            if len(x) != len(y):
                raise ValueError(
                    f"ImageDataset '{self.name}': x_{split} has {len(x)} "
                    f"examples but y_{split} has {len(y)}; they must match."
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"ImageDataset '{self.name}': train images are shaped "
                f"{self.x_train.shape[1:]} but test images are shaped "
                f"{self.x_test.shape[1:]}; they must match."
            )

    @property
    def image_shape(self):
        """The `(H, W, C)` shape of one image."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self):
        return (
            f"ImageDataset(name={self.name!r}, "
            f"train={self.x_train.shape}, test={self.x_test.shape}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )
