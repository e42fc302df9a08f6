#!/usr/bin/env bash
# Installs the Fashion-MNIST IDX files through Debian's dataset-fashion-mnist
# package when possible. Never fails hard: without the data, keras_unikd's
# demos fall back to scikit-learn's bundled digits.
set -u

PKG=dataset-fashion-mnist

if command -v dpkg >/dev/null 2>&1 \
    && dpkg -s "$PKG" 2>/dev/null | grep -q '^Status: install ok installed'; then
    dir=$(dpkg -L "$PKG" 2>/dev/null | grep -E 'idx[13]-ubyte(\.gz)?$' | head -n 1 | xargs -r dirname)
    echo "Fashion-MNIST is already installed (package $PKG) in: ${dir:-<unknown>}"
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing $PKG with apt-get..."
    if apt-get update -q && apt-get install -y -q "$PKG"; then
        dir=$(dpkg -L "$PKG" 2>/dev/null | grep -E 'idx[13]-ubyte(\.gz)?$' | head -n 1 | xargs -r dirname)
        echo "Fashion-MNIST installed in: ${dir:-<unknown>}"
        exit 0
    fi
    echo "WARNING: apt-get could not install $PKG." >&2
fi

cat <<MSG
Fashion-MNIST is not installed. To get it, either:
  - run as root on Debian/Ubuntu:  apt-get install $PKG
  - or put the four IDX files (train-images-idx3-ubyte[.gz],
    train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz],
    t10k-labels-idx1-ubyte[.gz]) in a directory and set
    KERAS_UNIKD_DATA=/that/directory
  - or let Keras download it into ~/.keras/datasets/fashion-mnist (needs
    internet access).
Without it, the demos fall back to scikit-learn's bundled 8x8 digits.
MSG
exit 0
