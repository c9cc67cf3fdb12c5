"""Every public object has a complete numpydoc docstring whose examples run, and a page in the API reference.

Papers are cited once, by the classes and functions that implement them; methods and
overrides of a documented base method need no References section of their own.

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
    if cites_its_source and not doc["References"] and not path.startswith(NO_SOURCE_MODULES):
        errors.append("References section not found (cite the paper or the source)")
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
