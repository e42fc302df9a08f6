"""How `pytest -n N` spreads the tests over its processes (`--dist load`).

pytest-xdist's `load` mode hands out tests one by one, which balances the
processes best, but a module-scoped fixture is then built once in every
process that runs one of the module's tests; `loadfile` builds it once but
hands out whole files, so one long file can leave a process idle at the
end. This scheduler does both: the tests of a module that defines a fixture
of module (or package, or class) scope go to one process together; every
other test goes out on its own. The modules with the most tests go first.

(pytest-xdist's own `loadgroup` would do it with `xdist_group` marks, but
under pytest 9.2 with pytest-xdist 3.8.0 the marks are ignored: xdist renames
`item._nodeid` on the workers and pytest 9.2 reads `item._id`.)
"""

import functools
import os
import re

from xdist.scheduler import LoadScopeScheduling

# `@pytest.fixture(scope="module")` and the like; a fixture of session scope
# is built once per process whatever the split.
_SHARED_FIXTURE = re.compile(r"""scope\s*=\s*["'](module|package|class)["']""")


@functools.lru_cache(maxsize=None)
def defines_shared_fixture(path):
    """Whether the source file at `path` defines a module-, package- or
    class-scoped fixture (a missing file defines none)."""
    try:
        with open(path, encoding="utf-8") as file:
            return bool(_SHARED_FIXTURE.search(file.read()))
    except OSError:
        return False


class ModuleFixtureScheduling(LoadScopeScheduling):
    """One work unit per test, or per module for the modules that define
    shared fixtures (see the module docstring)."""

    def __init__(self, config, log=None):
        super().__init__(config, log)
        self._rootdir = str(config.rootpath)

    def _split_scope(self, nodeid):
        path = nodeid.split("::", 1)[0]
        if defines_shared_fixture(os.path.join(self._rootdir, path)):
            return path
        return nodeid
