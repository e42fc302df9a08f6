import gzip
import subprocess

import keras
import numpy as np
import pytest

from keras_unikd.data import ImageDataset
from keras_unikd.data import fashion_mnist
from keras_unikd.data import load_fashion_mnist
from keras_unikd.data import read_idx

REAL_DPKG_DIRS = fashion_mnist._dpkg_dirs

_TYPE_CODES = {
    np.dtype("uint8"): 0x08,
    np.dtype("int8"): 0x09,
    np.dtype("int16"): 0x0B,
    np.dtype("int32"): 0x0C,
    np.dtype("float32"): 0x0D,
    np.dtype("float64"): 0x0E,
}


def idx_bytes(array):
    array = np.asarray(array)
    header = bytes([0, 0, _TYPE_CODES[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz=False):
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_tiny_set(directory, gz, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(
            0, 256, (n_train, 6, 5), dtype=np.uint8
        ),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype("uint8"),
        "t10k-images-idx3-ubyte": rng.integers(
            0, 256, (n_test, 6, 5), dtype=np.uint8
        ),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype("uint8"),
    }
    for name, array in arrays.items():
        write_idx(directory / name, array, gz=gz)
    return arrays


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No env var, no dpkg result, empty Keras cache, failing download."""
    monkeypatch.delenv("KERAS_UNIKD_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(fashion_mnist, "_dpkg_dirs", lambda: [])

    def no_network():
        raise ConnectionError("no internet in the test sandbox")

    monkeypatch.setattr(fashion_mnist, "_download_with_keras", no_network)
    return tmp_path


def check_loaded(ds, arrays, source):
    assert isinstance(ds, ImageDataset)
    assert ds.name == "fashion_mnist"
    assert ds.num_classes == 10
    assert ds.source == str(source)
    assert ds.x_train.shape == (20, 6, 5, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10, 6, 5, 1) and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    np.testing.assert_array_equal(
        ds.x_train[..., 0], arrays["train-images-idx3-ubyte"]
    )
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])


# --- read_idx ---------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"]
)
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", array, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 1  # Writable copy, not a view on the file bytes.


def test_read_idx_is_big_endian(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 1, 2]))
    np.testing.assert_array_equal(read_idx(path), [258])


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x01\x00\x00\x00\x01\x00", "bad magic number"),
        (b"\x00\x00\x42\x01\x00\x00\x00\x01\x00", "unknown data type"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header declares 3"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated or corrupt"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "truncated or corrupt"),
    ],
)
def test_read_idx_corrupt(tmp_path, raw, match):
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((10, 4), "uint8")))
    path = tmp_path / "bad.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="Corrupt gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# --- search order -----------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_from_data_dir(isolated, gz):
    arrays = make_tiny_set(isolated / "fm", gz=gz)
    ds = load_fashion_mnist(data_dir=isolated / "fm", verbose=False)
    check_loaded(ds, arrays, isolated / "fm")


@pytest.mark.parametrize("subfolder", [False, True])
def test_load_from_env_var(isolated, monkeypatch, subfolder):
    root = isolated / "data"
    where = root / "fashion-mnist" if subfolder else root
    arrays = make_tiny_set(where, gz=subfolder)
    monkeypatch.setenv("KERAS_UNIKD_DATA", str(root))
    ds = load_fashion_mnist(verbose=False)
    check_loaded(ds, arrays, where)


def test_data_dir_has_priority_over_env_var(isolated, monkeypatch):
    make_tiny_set(isolated / "env", gz=False, seed=1)
    arrays = make_tiny_set(isolated / "arg", gz=True, seed=2)
    monkeypatch.setenv("KERAS_UNIKD_DATA", str(isolated / "env"))
    ds = load_fashion_mnist(data_dir=isolated / "arg", verbose=False)
    check_loaded(ds, arrays, isolated / "arg")


def test_missing_data_dir_continues_search(isolated, monkeypatch):
    arrays = make_tiny_set(isolated / "env", gz=False)
    monkeypatch.setenv("KERAS_UNIKD_DATA", str(isolated / "env"))
    ds = load_fashion_mnist(data_dir=isolated / "missing", verbose=False)
    check_loaded(ds, arrays, isolated / "env")


def test_incomplete_directory_is_skipped(isolated, monkeypatch):
    make_tiny_set(isolated / "partial", gz=False)
    (isolated / "partial" / "t10k-labels-idx1-ubyte").unlink()
    arrays = make_tiny_set(isolated / "env", gz=False)
    monkeypatch.setenv("KERAS_UNIKD_DATA", str(isolated / "env"))
    ds = load_fashion_mnist(data_dir=isolated / "partial", verbose=False)
    check_loaded(ds, arrays, isolated / "env")


def test_load_from_dpkg_listing(isolated, monkeypatch):
    pkg_dir = isolated / "usr" / "share" / "datasets" / "fashion-mnist"
    arrays = make_tiny_set(pkg_dir, gz=True)
    listing = "\n".join(
        ["/.", "/usr", str(pkg_dir)]
        + [str(p) for p in sorted(pkg_dir.iterdir())]
        + ["/usr/share/doc/dataset-fashion-mnist/copyright"]
    )

    def fake_run(cmd, **kwargs):
        assert cmd == ["dpkg", "-L", "dataset-fashion-mnist"]
        return subprocess.CompletedProcess(cmd, 0, stdout=listing, stderr="")

    monkeypatch.setattr(fashion_mnist.subprocess, "run", fake_run)
    # Undo the `isolated` fixture's stub so the real dpkg parsing runs.
    monkeypatch.setattr(fashion_mnist, "_dpkg_dirs", REAL_DPKG_DIRS)
    assert fashion_mnist._dpkg_dirs() == [pkg_dir]
    ds = load_fashion_mnist(verbose=False)
    check_loaded(ds, arrays, pkg_dir)


@pytest.mark.parametrize(
    "behaviour", ["missing", "not_installed", "timeout"]
)
def test_dpkg_failures_are_tolerated(monkeypatch, behaviour):
    def fake_run(cmd, **kwargs):
        if behaviour == "missing":
            raise FileNotFoundError("dpkg")
        if behaviour == "timeout":
            raise subprocess.TimeoutExpired(cmd, 30)
        return subprocess.CompletedProcess(
            cmd, 1, stdout="", stderr="package is not installed"
        )

    monkeypatch.setattr(fashion_mnist.subprocess, "run", fake_run)
    assert REAL_DPKG_DIRS() == []


def test_load_from_keras_cache(isolated):
    cache = isolated / "keras_home" / "datasets" / "fashion-mnist"
    arrays = make_tiny_set(cache, gz=True)
    ds = load_fashion_mnist(verbose=False)
    check_loaded(ds, arrays, cache)


def test_load_through_keras_download(isolated, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    y_train = (np.arange(12) % 10).astype("uint8")
    x_test = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    y_test = np.arange(4).astype("uint8")
    monkeypatch.setattr(
        fashion_mnist,
        "_download_with_keras",
        lambda: ((x_train, y_train), (x_test, y_test)),
    )
    ds = load_fashion_mnist(verbose=True)
    assert ds.name == "fashion_mnist"
    assert ds.x_train.shape == (12, 28, 28, 1)
    assert ds.y_test.dtype == np.int32
    assert "keras.datasets.fashion_mnist" in ds.source
    assert "Loaded Fashion-MNIST" in capsys.readouterr().out


# --- fallback and validation -------------------------------------------------


def test_fallback_to_digits(isolated, capsys):
    ds = load_fashion_mnist(data_dir=isolated / "missing", verbose=True)
    assert ds.name == "digits"
    assert ds.x_train.shape[1:] == (8, 8, 1)
    out = capsys.readouterr().out
    assert "Fashion-MNIST was not found" in out
    assert str(isolated / "missing") in out
    assert str(isolated / "keras_home" / "datasets" / "fashion-mnist") in out
    assert "no internet in the test sandbox" in out
    assert "make data" in out
    assert "apt-get install dataset-fashion-mnist" in out
    assert "KERAS_UNIKD_DATA" in out
    assert "digits" in out


def test_fallback_is_silent_when_not_verbose(isolated, capsys):
    ds = load_fashion_mnist(verbose=False)
    assert ds.name == "digits"
    assert capsys.readouterr().out == ""


def test_keras_download_messages_follow_verbose(isolated, monkeypatch):
    """Keras prints "Downloading data from ..." unless interactive logging is
    off: it is off during the download exactly when verbose=False."""
    seen = []

    def download():
        seen.append(keras.config.is_interactive_logging_enabled())
        raise ConnectionError("no internet in the test sandbox")

    monkeypatch.setattr(fashion_mnist, "_download_with_keras", download)
    assert keras.config.is_interactive_logging_enabled()
    load_fashion_mnist(verbose=False)
    load_fashion_mnist(verbose=True)
    assert seen == [False, True]
    assert keras.config.is_interactive_logging_enabled()


def test_no_fallback_raises(isolated):
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST was not found"):
        load_fashion_mnist(verbose=False, fallback=False)


def test_download_can_be_disabled(isolated, monkeypatch):
    def must_not_download():
        raise AssertionError("download attempted")

    monkeypatch.setattr(fashion_mnist, "_download_with_keras", must_not_download)
    with pytest.raises(FileNotFoundError, match="allow_download=False"):
        load_fashion_mnist(verbose=False, allow_download=False, fallback=False)


def test_corrupt_file_in_search_path_raises(isolated):
    make_tiny_set(isolated / "fm", gz=False)
    path = isolated / "fm" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="not a valid IDX file"):
        load_fashion_mnist(data_dir=isolated / "fm", verbose=False)


def test_mismatched_counts_raise(isolated):
    make_tiny_set(isolated / "fm", gz=False)
    write_idx(
        isolated / "fm" / "train-labels-idx1-ubyte", np.zeros(7, "uint8")
    )
    with pytest.raises(ValueError, match="mismatched or corrupt"):
        load_fashion_mnist(data_dir=isolated / "fm", verbose=False)


def test_out_of_range_labels_raise(isolated):
    make_tiny_set(isolated / "fm", gz=False)
    write_idx(
        isolated / "fm" / "t10k-labels-idx1-ubyte",
        np.full(10, 12, dtype="uint8"),
    )
    with pytest.raises(ValueError, match="labels must lie in"):
        load_fashion_mnist(data_dir=isolated / "fm", verbose=False)


def test_keras_home_is_respected(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert fashion_mnist._keras_cache_dir() == (
        tmp_path / "datasets" / "fashion-mnist"
    )
