"""Offline-first Fashion-MNIST loader.

Fashion-MNIST is read from local IDX files when they exist anywhere we know
to look, downloaded through Keras only as a last resort, and replaced by
scikit-learn's bundled digits when nothing works (so demos and benchmarks
still run on machines without internet access).
"""

import contextlib
import gzip
import os
import subprocess
import zlib
from pathlib import Path

import numpy as np

from keras_unikd.data.dataset import ImageDataset
from keras_unikd.data.digits import load_digits_dataset

#: Environment variable naming a directory that holds the IDX files
#: (directly, or inside a `fashion-mnist/` subfolder).
DATA_ENV_VAR = "KERAS_UNIKD_DATA"

#: Debian package that installs the IDX files.
DEBIAN_PACKAGE = "dataset-fashion-mnist"

FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path):
    """Reads an IDX file (the MNIST / Fashion-MNIST format) into numpy.

    The file may be gzip-compressed or not (detected from its content).
    The format is a 4-byte magic number (two zero bytes, a type code and
    the number of dimensions), one big-endian `uint32` per dimension, then
    the big-endian data.

    Args:
        path: Path of the file.

    Returns:
        A numpy array in native byte order with the stored shape and type
        (`uint8` for the Fashion-MNIST files).

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file is not a valid IDX file (bad magic number,
            unknown type code, truncated or oversized data, broken gzip
            stream).

    Example:

    >>> images = read_idx("train-images-idx3-ubyte.gz")  # doctest: +SKIP
    >>> images.shape, images.dtype  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(
                f"Corrupt gzip stream in IDX file {path}: {e}. Delete the "
                "file and fetch it again."
            ) from e

    def corrupt(reason):
        return ValueError(
            f"{path} is not a valid IDX file: {reason}. Delete the file and "
            "fetch it again (e.g. `make data` or `apt-get install "
            f"{DEBIAN_PACKAGE}`)."
        )

    if len(raw) < 4:
        raise corrupt(f"only {len(raw)} bytes, too short for the header")
    if raw[0] != 0 or raw[1] != 0:
        raise corrupt(
            f"bad magic number 0x{raw[:4].hex()} (must start with 0x0000)"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise corrupt(f"unknown data type code 0x{type_code:02x}")
    if ndim == 0:
        raise corrupt("zero dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise corrupt(
            f"header declares {ndim} dimensions but the file ends after "
            f"{len(raw)} bytes"
        )
    dims = tuple(
        int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    )
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        raise corrupt(
            f"shape {dims} of {dtype.name} needs {expected} data bytes but "
            f"the file has {actual} (truncated or corrupt)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def _locate_files(directory):
    """Returns `{key: path}` if `directory` holds all four files, else None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = {}
    for key, base in FASHION_MNIST_FILES.items():
        for candidate in (directory / base, directory / (base + ".gz")):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _dpkg_dirs():
    """Directories holding the IDX files according to `dpkg -L`.

    Returns an empty list when dpkg is missing, fails, or the package is not
    installed.
    """
    try:
        result = subprocess.run(
            ["dpkg", "-L", DEBIAN_PACKAGE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if result.returncode != 0:
        return []
    names = set(FASHION_MNIST_FILES.values())
    names |= {n + ".gz" for n in names}
    dirs = []
    for line in result.stdout.splitlines():
        p = Path(line.strip())
        if p.name in names and p.parent not in dirs:
            dirs.append(p.parent)
    return dirs


def _keras_cache_dir():
    """Where `keras.datasets.fashion_mnist` caches its files."""
    keras_home = os.environ.get("KERAS_HOME")
    base = Path(keras_home) if keras_home else Path.home() / ".keras"
    return base / "datasets" / "fashion-mnist"


def fashion_mnist_search_paths(data_dir=None):
    """Lists the directories searched for the Fashion-MNIST IDX files.

    The order is: `data_dir` (and its `fashion-mnist/` subfolder), then
    `$KERAS_UNIKD_DATA` (and its `fashion-mnist/` subfolder), then the
    directory where Debian's `dataset-fashion-mnist` package put the files
    (from `dpkg -L`), then the Keras cache `$KERAS_HOME/datasets/
    fashion-mnist` (default `~/.keras/datasets/fashion-mnist`).

    Args:
        data_dir: Optional directory to search first.

    Returns:
        A list of `(description, Path)` tuples, in search order.
    """
    paths = []
    if data_dir:
        d = Path(data_dir).expanduser()
        paths += [("data_dir", d), ("data_dir", d / "fashion-mnist")]
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        d = Path(env).expanduser()
        paths += [(f"${DATA_ENV_VAR}", d), (f"${DATA_ENV_VAR}", d / "fashion-mnist")]
    for d in _dpkg_dirs():
        paths.append((f"Debian package {DEBIAN_PACKAGE}", d))
    paths.append(("Keras cache", _keras_cache_dir()))
    return paths


@contextlib.contextmanager
def _keras_messages(verbose):
    """Keras's own messages ("Downloading data from ...", the progress bar)
    on stdout when `verbose`, else to absl logging for the duration."""
    import keras

    interactive = keras.config.is_interactive_logging_enabled()
    if not verbose:
        keras.config.disable_interactive_logging()
    try:
        yield
    finally:
        if interactive:
            keras.config.enable_interactive_logging()


def _download_with_keras():
    """Downloads (or reads the cache) through Keras; may raise anything."""
    import keras

    return keras.datasets.fashion_mnist.load_data()


def _build_dataset(x_train, y_train, x_test, y_test, source):
    arrays = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST from {source}: expected {split} images shaped "
                f"(N, H, W) and labels shaped (N,), got {x.shape} and "
                f"{y.shape}. The files are probably mismatched or corrupt."
            )
        if x.dtype != np.uint8:
            raise ValueError(
                f"Fashion-MNIST from {source}: {split} images must be uint8, "
                f"got {x.dtype}."
            )
        if y.size and (y.min() < 0 or y.max() >= len(FASHION_MNIST_CLASSES)):
            raise ValueError(
                f"Fashion-MNIST from {source}: {split} labels must lie in "
                f"[0, {len(FASHION_MNIST_CLASSES) - 1}], got range "
                f"[{y.min()}, {y.max()}]."
            )
        arrays[f"x_{split}"] = x[..., None]
        arrays[f"y_{split}"] = y.astype("int32")
    return ImageDataset(
        name="fashion_mnist",
        num_classes=len(FASHION_MNIST_CLASSES),
        source=str(source),
        **arrays,
    )


def load_fashion_mnist(
    data_dir=None, verbose=True, *, allow_download=True, fallback=True
):
    """Loads Fashion-MNIST, offline first, falling back to sklearn digits.

    The four IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally
    `.gz`) are looked for in, in order:

    1. `data_dir`, then `$KERAS_UNIKD_DATA` (the files directly in the
       directory or in a `fashion-mnist/` subfolder);
    2. the directory of Debian's `dataset-fashion-mnist` package (found
       with `dpkg -L`, typically `/usr/share/datasets/fashion-mnist`);
    3. the Keras cache, `$KERAS_HOME/datasets/fashion-mnist` (default
       `~/.keras/datasets/fashion-mnist`);
    4. `keras.datasets.fashion_mnist.load_data()`, which downloads.

    If all of these fail, a message explains how to get the data and
    scikit-learn's bundled 8x8 digits are returned instead (check
    `dataset.name`).

    Args:
        data_dir: Optional directory to search first.
        verbose: Whether to print where the data came from, and why the
            fallback was used if it was. When False, Keras's download
            messages are silenced too.
        allow_download: Whether step 4 (downloading through Keras) may be
            tried.
        fallback: Whether to fall back to `load_digits_dataset()`. When
            False, a `FileNotFoundError` is raised instead.

    Returns:
        An `ImageDataset`: `name="fashion_mnist"` with `uint8` images shaped
        `(N, 28, 28, 1)` and `int32` labels, or the `"digits"` fallback.

    Raises:
        ValueError: If a found IDX file is corrupt or the files don't match.
        FileNotFoundError: If nothing was found and `fallback=False`.

    Example:

    >>> ds = load_fashion_mnist(verbose=False)
    >>> ds.name in ("fashion_mnist", "digits")
    True
    """
    searched = fashion_mnist_search_paths(data_dir)
    for description, directory in searched:
        files = _locate_files(directory)
        if files is None:
            continue
        arrays = {key: read_idx(path) for key, path in files.items()}
        dataset = _build_dataset(source=str(directory), **arrays)
        if verbose:
            print(
                f"Loaded Fashion-MNIST from {directory} ({description}): "
                f"{len(dataset.x_train)} train / {len(dataset.x_test)} test."
            )
        return dataset

    download_error = "download disabled (allow_download=False)"
    if allow_download:
        try:
            with _keras_messages(verbose):
                (x_train, y_train), (x_test, y_test) = _download_with_keras()
        except Exception as e:  # No network, proxy, SSL, bad cache, ...
            download_error = f"{type(e).__name__}: {e}"
        else:
            dataset = _build_dataset(
                x_train,
                y_train,
                x_test,
                y_test,
                source="keras.datasets.fashion_mnist.load_data()",
            )
            if verbose:
                print(
                    "Loaded Fashion-MNIST through "
                    "keras.datasets.fashion_mnist.load_data()."
                )
            return dataset

    looked = "\n".join(f"  - {d} ({desc})" for desc, d in searched)
    message = (
        "Fashion-MNIST was not found. Looked for the IDX files in:\n"
        f"{looked}\n"
        f"Download through Keras failed: {download_error}\n"
        "To get it, run `make data` (scripts/install-fashion-mnist.sh), or "
        f"`apt-get install {DEBIAN_PACKAGE}`, or put the four IDX files in "
        f"a directory and set {DATA_ENV_VAR} to it (or pass `data_dir=`)."
    )
    if not fallback:
        raise FileNotFoundError(message)
    if verbose:
        print(
            message + "\nFalling back to scikit-learn's bundled 8x8 digits "
            "dataset (name='digits')."
        )
    return load_digits_dataset()
