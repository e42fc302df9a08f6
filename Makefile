# The two commands of the README:
#   make demo  - install into .venv, then distil a Fashion-MNIST CNN four ways
#   make test  - install into .venv, then run the test suite under TensorFlow and JAX
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.keras-unikd-installed
PYTEST := $(PY) -m pytest -q -p no:cacheprovider --doctest-modules keras_unikd tests

.PHONY: install data demo test test-tensorflow test-jax clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[jax,test,demo]"
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist (needs root; the demo
# falls back to other sources, and finally to scikit-learn's digits).
data:
	bash scripts/install-fashion-mnist.sh

demo: install data
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 $(PY) examples/fashion_mnist_unikd.py

test-tensorflow: install
	KERAS_BACKEND=tensorflow $(PYTEST)

test-jax: install
	KERAS_BACKEND=jax $(PYTEST)

test: test-tensorflow test-jax

clean:
	rm -rf $(VENV) artifacts .pytest_cache
