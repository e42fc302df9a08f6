"""Fixtures of the benchmark scripts' smoke runs."""

import pytest


@pytest.fixture(scope="session")
def quick_teachers(tmp_path_factory):
    """One cache of --quick teachers for the accuracy and sweep smoke runs."""
    return str(tmp_path_factory.mktemp("teachers"))
