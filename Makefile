# The two commands of the README:
#   make demo  - install into .venv, then distil a Fashion-MNIST CNN four ways
#   make test  - install into .venv, lint with ruff (make lint), build the
#                documentation site (make docs), then run the test suite
#                (tests and doctests) under TensorFlow, JAX and PyTorch, in
#                that order, two test processes at a time (TEST_WORKERS=...);
#                make test-tensorflow / test-jax / test-torch run one backend;
#                make test-fast runs TensorFlow's pass without the benchmark
#                scripts' smoke runs (tests/benchmarks), for development
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.keras-unikd-installed
# pytest-xdist: TEST_WORKERS processes; tests/conftest.py makes `--dist load`
# send a module with module-scoped fixtures to one process whole (its
# fixtures built once) and every other test out on its own (the processes
# finish together). A test process keeps about one core busy.
TEST_WORKERS ?= 2
# The tests run a few steps of tiny models, so under JAX (and in the JAX
# subprocesses of the other passes) XLA's compile time dominates: these flags
# skip the CPU backend's expensive LLVM optimisations, which makes compiling
# faster and the compiled code slower. They do not change what the tests
# assert (the same operations, in float32). A caller's XLA_FLAGS come last.
TEST_XLA_FLAGS := --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true
PYTEST := XLA_FLAGS="$(TEST_XLA_FLAGS) $$XLA_FLAGS" $(PY) -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) \
	--dist load --doctest-modules keras_unikd tests
# The `torch` extra asks for torch>=2.4, which on Linux resolves to PyPI's
# newest multi-GB CUDA build; the tests install this version, whose CPU build
# (2.13.0+cpu) the package indexes here serve. Elsewhere, point pip at
# PyTorch's CPU wheels: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_FOR_TESTS := torch==2.13.0

.PHONY: install data demo lint docs test test-fast test-tensorflow test-jax test-torch clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_FOR_TESTS)" -e ".[jax,torch,test,demo,hub,cv,docs]"
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist (needs root; the demo
# falls back to other sources, and finally to scikit-learn's digits).
data:
	bash scripts/install-fashion-mnist.sh

demo: install data
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 $(PY) examples/fashion_mnist_unikd.py

# ruff, configured in pyproject.toml.
lint: install
	$(VENV)/bin/ruff check .

# The documentation site (mkdocs.yml, docs/) into site/. --strict: a broken
# link, a page missing from the nav or a docstring that mkdocstrings cannot
# render fails the build. The API reference reads the docstrings statically
# (griffe); nothing is imported.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

test-tensorflow: install
	KERAS_BACKEND=tensorflow $(PYTEST)

test-jax: install
	KERAS_BACKEND=jax $(PYTEST)

test-torch: install
	KERAS_BACKEND=torch $(PYTEST)

test: lint docs test-tensorflow test-jax test-torch

test-fast: install
	KERAS_BACKEND=tensorflow $(PYTEST) --ignore=tests/benchmarks

clean:
	rm -rf $(VENV) artifacts site .pytest_cache .ruff_cache
