"""The ``Example:`` blocks of the public ``rendering`` API run, on CPU, and print what they say."""

import doctest
import importlib
import inspect

import pytest

import rendering

MODULES = ["rendering.cameras", "rendering.volumes", "rendering.rasterize", "rendering.checks"]


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for name in MODULES for t in finder.find(importlib.import_module(name)) if t.examples]
    return sorted(tests, key=lambda t: t.name)


@pytest.mark.parametrize("test", _examples(), ids=lambda t: t.name)
def test_docstring_example(test: doctest.DocTest):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_every_public_rendering_function_has_an_example():
    # RasterOutput is a result record; rasterize_features' example shows it.
    names = [n for n in rendering.__all__ if n != "RasterOutput"]
    missing = [n for n in names if "Example:" not in (inspect.getdoc(getattr(rendering, n)) or "")]
    assert not missing, f"no Example: in the docstring of {missing}"
