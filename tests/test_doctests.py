"""The package's ``>>>`` examples, run as tests: every docstring example of every module
of the imported package (the source tree or the installed wheel, whichever ``import
scalargrad`` finds), the compiled ``scalargrad._core`` included."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import scalargrad

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = [scalargrad.__name__]
    for info in pkgutil.iter_modules(scalargrad.__path__, scalargrad.__name__ + "."):
        if not info.name.endswith(".__main__"):
            names.append(info.name)
    return sorted(names)


def _examples() -> list:
    """One pytest parameter per docstring that holds examples."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    found, seen = [], set()
    for name in _modules():
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            # a re-exported object is found under each module that holds it: run it once
            key = (test.filename, test.lineno, test.docstring)
            if test.examples and key not in seen:
                seen.add(key)
                found.append(pytest.param(test, id=test.name))
    return found


EXAMPLES = _examples()


def test_examples_are_found():
    """The finder sees the examples of the Python modules and of the extension."""
    count = sum(len(p.values[0].examples) for p in EXAMPLES)
    assert count >= 70, f"only {count} examples found"
    assert any(p.values[0].name.startswith("scalargrad._core.") for p in EXAMPLES)


@pytest.mark.parametrize("test", EXAMPLES)
def test_docstring_examples(test: doctest.DocTest, tmp_path, monkeypatch):
    # examples that write files write them into a fresh directory
    monkeypatch.chdir(tmp_path)
    test.globs = dict(test.globs)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out: list[str] = []
    result = runner.run(test, out=out.append, clear_globs=True)
    assert result.attempted == len(test.examples)
    assert result.failed == 0, "".join(out)


def test_a_wrong_example_fails():
    """The runner above does report a wrong result (so a passing run means something)."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(
        ">>> from scalargrad import Value\n>>> (Value(2.0) * 3.0).data\n7.0\n",
        {},
        "wrong",
        "wrong.py",
        0,
    )
    out: list[str] = []
    result = doctest.DocTestRunner(optionflags=FLAGS).run(test, out=out.append)
    assert (result.attempted, result.failed) == (2, 1)
    assert "Expected:\n    7.0\nGot:\n    6.0" in "".join(out)
