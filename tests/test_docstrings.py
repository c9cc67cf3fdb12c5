"""Every public object has a complete numpydoc docstring whose examples run, and a page in the API reference.

Papers are cited once per module, by the first class or function that implements them
(the module's others name them in words); methods and overrides of a documented base
method need no References section of their own.

"Public" is what the API reference documents: the names in the ``__all__`` of
``skillfit``, ``skillfit.datasets``, ``skillfit.metrics``, ``skillfit.plotting``,
``skillfit.backbones`` and ``skillfit.skills``, and the public methods and properties
that skillfit itself defines on the estimators and on the classes of
``skillfit.skills``. The examples themselves run as doctests (``--doctest-modules``
in ``setup.cfg``); here we check that they exist and are not skipped.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import skillfit
from skillfit import backbones, callbacks, datasets, loggers, metrics, plotting, skills

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is in the docs and test extras")

PUBLIC_MODULES = (skillfit, datasets, metrics, plotting, backbones, skills, callbacks, loggers)
# Modules that implement no paper or outside source: nothing for a References section to cite.
NO_SOURCE_MODULES = ("skillfit.callbacks", "skillfit.loggers")
API_PAGES = Path(__file__).resolve().parents[1] / "docs" / "api"
# numpydoc's checks that we require: a docstring, every parameter documented and no
# unknown one, a Returns section where something is returned, See Also, Examples.
REQUIRED_CHECKS = {"GL08", "PR01", "PR02", "RT01", "SA01", "EX01"}
# scikit-learn's metadata-routing methods: documented by scikit-learn.
SKLEARN_MACHINERY = {"set_fit_request", "set_partial_fit_request", "set_score_request", "set_predict_request", "set_params", "get_params"}


def _module_objects():
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj


def _members(cls):
    """Public methods and properties that skillfit defines on ``cls`` or its skillfit bases."""
    for name in sorted(dir(cls)):
        if name.startswith("_") or name in SKLEARN_MACHINERY:
            continue
        owner = next(klass for klass in cls.__mro__ if name in vars(klass))
        if not owner.__module__.startswith("skillfit"):
            continue
        member = vars(owner)[name]
        if name in callbacks.EVENTS:
            continue  # the events are documented once, in Callback's docstring
        if any(name in vars(base) for base in owner.__mro__[1:] if base.__module__.startswith("skillfit")):
            continue  # an override (a router's forward, mix, ...): documented once, on the base class
        if isinstance(member, (property, classmethod, staticmethod)) or inspect.isfunction(member):
            yield name


def public_objects() -> dict[str, object]:
    """Import path of every public object to check (members under their class's path)."""
    found = {}
    for path, obj in _module_objects():
        found[path] = obj
        if inspect.isclass(obj):
            for name in _members(obj):
                found[f"{path}.{name}"] = getattr(obj, name)
    return found


PUBLIC = public_objects()
# Modules where a public class or function has a References section: each paper is cited once per
# module, so the module's other objects may name it in words.
_MODULES_THAT_CITE = {
    obj.__module__ for path, obj in PUBLIC.items()
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and "References\n" in (inspect.getdoc(obj) or "")
}


def _sections(path: str):
    from numpydoc.docscrape import get_doc_object

    obj = PUBLIC[path]
    if isinstance(obj, property):
        obj = obj.fget
    return get_doc_object(obj)


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_docstring_is_complete(path):
    errors = [f"{code}: {message}" for code, message in numpydoc_validate.validate(path)["errors"] if code in REQUIRED_CHECKS]
    doc = _sections(path)
    obj = PUBLIC[path]
    parent = PUBLIC.get(path.rsplit(".", 1)[0])
    cites_its_source = not inspect.isclass(parent)  # a class or function, not a method of one
    if cites_its_source and not doc["References"] and not path.startswith(NO_SOURCE_MODULES) \
            and getattr(obj, "__module__", None) not in _MODULES_THAT_CITE:
        errors.append("References section not found (cite the paper or the source, once per module)")
    examples = "\n".join(doc["Examples"])
    if ">>>" not in examples:
        errors.append("Examples section has no doctest (>>> lines)")
    if "+SKIP" in examples:
        errors.append("Examples section skips lines (# doctest: +SKIP): every example must run")
    obj = PUBLIC[path]
    if inspect.isclass(obj) and issubclass(obj, skillfit.estimators._base.SkillEstimatorBase) and not doc["Attributes"]:
        errors.append("an estimator's docstring needs an Attributes section")
    assert not errors, f"{path}:\n  " + "\n  ".join(errors)


def _api_page_entries() -> set[str]:
    """Full names of the objects that the pages of docs/api/ list in their autosummary tables."""
    entries = set()
    for page in sorted(API_PAGES.glob("*.rst")):
        module = None
        for line in page.read_text().splitlines():
            if line.startswith(".. currentmodule::"):
                module = line.split("::", 1)[1].strip()
            elif line.startswith("   ") and re.fullmatch(r"[A-Za-z_]\w*", line.strip()) and module:
                entries.add(f"{module}.{line.strip()}")
    return entries


def test_every_public_object_has_an_api_page():
    """The pages of docs/api/ list every public class and function of the public modules, and nothing else."""
    public = {path for path, _ in _module_objects()}
    listed = _api_page_entries()
    assert public - listed == set(), f"public but not in docs/api/: {sorted(public - listed)}"
    assert listed - public == set(), f"in docs/api/ but not public: {sorted(listed - public)}"


def _citations(text: str) -> list[str]:
    """The papers of a docstring's References entries, by their first 60 letters and digits."""
    return [re.sub(r"\W+", " ", entry)[:60] for entry in re.findall(r"^\s*\.\. \[\w+\] (.+)$", text, re.M)]


@pytest.mark.parametrize("module", sorted({obj.__module__ for obj in PUBLIC.values() if hasattr(obj, "__module__")}))
def test_each_paper_is_cited_once_per_module(module):
    """No paper has two References entries in one module, and every ``[n]_`` has its entry in its docstring."""
    import ast
    import importlib
    import collections

    source = inspect.getsource(importlib.import_module(module))
    docstrings = [ast.get_docstring(node) or "" for node in ast.walk(ast.parse(source))
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    counts = collections.Counter(paper for text in docstrings for paper in _citations(text))
    assert {paper: n for paper, n in counts.items() if n > 1} == {}
    for path, obj in PUBLIC.items():
        if getattr(obj, "__module__", None) == module:
            text = inspect.getdoc(obj.fget if isinstance(obj, property) else obj) or ""
            markers, entries = set(re.findall(r"\[(\w+)\]_", text)), set(re.findall(r"\.\. \[(\w+)\]", text))
            assert markers <= entries, f"{path}: [n]_ without a References entry: {sorted(markers - entries)}"
