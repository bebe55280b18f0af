"""A job's code inputs are the closure of its imports, function by function (vlmattn.codedeps)."""

from pathlib import Path

import pytest

from tests import REPO
from vlmattn.codedeps import code_files

PACKAGE = {
    "vlmattn/__init__.py": "",
    "vlmattn/a.py": "from .b import f\n\n\ndef g():\n    from .c import h\n    return f() + h()\n",
    "vlmattn/b.py": ("def f():\n    from .d import x\n    return x\n\n\n"
                     "def unused():\n    from .e import y\n    return y\n"),
    "vlmattn/c.py": "def h():\n    return helper()\n\n\ndef helper():\n    from .sub import leaf\n    return leaf\n",
    "vlmattn/d.py": "x = 1\n",
    "vlmattn/e.py": "y = 2\n",
    "vlmattn/sub/__init__.py": "",
    "vlmattn/sub/leaf.py": "z = 3\n",
    "vlmattn/plain.py": "import vlmattn.e\n\nVALUE = vlmattn.e\n",
}


@pytest.fixture
def tree(tmp_path):
    for name, text in PACKAGE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def names(root: Path, files) -> set[str]:
    return {str(Path(f).relative_to(root.resolve())) for f in files}


def test_the_functions_a_script_calls_and_what_they_import(tree):
    script = tree / "job.py"
    script.write_text("from vlmattn import a\n\na.g()\n")
    got = names(tree, code_files(tree, [script]))
    # g → c.h → c.helper → sub.leaf; a's top level → b.f → d; b.unused (→ e) is not reached
    assert got == {"job.py", "vlmattn/__init__.py", "vlmattn/a.py", "vlmattn/b.py", "vlmattn/c.py",
                   "vlmattn/d.py", "vlmattn/sub/__init__.py", "vlmattn/sub/leaf.py"}


def test_a_module_used_as_a_whole_and_a_module_by_name(tree):
    script = tree / "job.py"
    script.write_text("from vlmattn import plain\n\nprint(plain)\n")
    assert "vlmattn/e.py" in names(tree, code_files(tree, [script]))  # plain's top level imports e
    got = names(tree, code_files(tree, ["vlmattn.b"]))  # a module loaded by name: all of it
    assert {"vlmattn/d.py", "vlmattn/e.py"} <= got
    with pytest.raises(ValueError, match="no module 'vlmattn.nothing'"):
        code_files(tree, ["vlmattn.nothing"])


def test_the_workflow_jobs_read_their_own_modules():
    def code(script, *modules):
        return names(REPO, code_files(REPO, [REPO / "workflow_scripts" / script, *modules]))

    concentration = code("metric.py", "vlmattn.metrics.concentration")
    assert {"vlmattn/metrics/concentration.py", "vlmattn/maps.py", "vlmattn/store.py"} <= concentration
    assert "vlmattn/metrics/spatial.py" not in concentration and "vlmattn/engine/inference.py" not in concentration
    quadrants = code("contrast.py", "vlmattn.contrasts.quadrants")
    assert "vlmattn/contrasts/quadrants.py" in quadrants and "vlmattn/contrasts/heads.py" not in quadrants
    online = code("pruning_online.py")
    assert {"vlmattn/pruning/flops.py", "vlmattn/engine/capture.py", "vlmattn/engine/inference.py"} <= online
    assert "vlmattn/pruning/train_pruner.py" not in online
    assert "vlmattn/pruning/flops.py" not in code("train_pruner.py")
