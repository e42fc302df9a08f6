"""tests/xdist_scheduling.py: which tests `pytest -n N` sends out together."""

import types

import pytest

pytest.importorskip("xdist")

from xdist_scheduling import ModuleFixtureScheduling  # noqa: E402

SHARED = 'import pytest\n\n@pytest.fixture(scope="module")\ndef model():\n    return 1\n'
PLAIN = "import pytest\n\n@pytest.fixture\ndef model():\n    return 1\n"


class FakeNode:
    """Records the work units a scheduler sends to a test process."""

    def __init__(self, name):
        self.gateway = types.SimpleNamespace(id=name)
        self.units = []
        self.shutting_down = False

    def send_runtest_some(self, indexes):
        self.units.append(indexes)

    def shutdown(self):
        self.shutting_down = True


def test_module_fixture_modules_go_whole_and_the_rest_one_by_one(tmp_path):
    (tmp_path / "test_shared.py").write_text(SHARED)
    (tmp_path / "test_plain.py").write_text(PLAIN)
    config = types.SimpleNamespace(
        rootpath=tmp_path,
        getvalue=lambda name: {"tx": ["popen", "popen"]}[name],
        option=types.SimpleNamespace(loadscopereorder=True),
    )
    scheduler = ModuleFixtureScheduling(config)
    collection = [
        "test_plain.py::test_a", "test_plain.py::test_b", "test_plain.py::test_c",
        "test_shared.py::test_a", "test_shared.py::test_b", "test_shared.py::test_c",
        "test_shared.py::test_d",
    ]
    nodes = [FakeNode("gw0"), FakeNode("gw1")]
    for node in nodes:
        scheduler.add_node(node)
        scheduler.add_node_collection(node, collection)
    scheduler.schedule()

    sent = [[[collection[i] for i in unit] for unit in node.units] for node in nodes]
    # The module with the most tests first, whole, to the first process;
    # then single tests, in order, until each process holds more than two.
    assert sent[0] == [
        ["test_shared.py::test_a", "test_shared.py::test_b", "test_shared.py::test_c",
         "test_shared.py::test_d"],
    ]
    assert sent[1] == [["test_plain.py::test_a"], ["test_plain.py::test_b"]]
    assert list(scheduler.workqueue) == ["test_plain.py::test_c"]


def test_a_file_it_cannot_read_defines_no_shared_fixture(tmp_path):
    from xdist_scheduling import defines_shared_fixture

    assert not defines_shared_fixture(str(tmp_path / "gone.py"))
    (tmp_path / "test_class.py").write_text("@pytest.fixture(scope='class')\n")
    assert defines_shared_fixture(str(tmp_path / "test_class.py"))
