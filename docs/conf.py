"""Sphinx configuration of the skillfit documentation site.

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` (warnings are
errors). The Markdown pages are read by myst-parser, docstrings by numpydoc, and the
scripts of ``examples/`` run through sphinx-gallery; ``SKILLFIT_EXAMPLE_SIZE=small``
makes them run on a reduced size (CI does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import skillfit

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

project = "skillfit"
author = "skillfit developers"
copyright = "2026, skillfit developers"
release = version = skillfit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "**/README.md", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip"]
# Every cross-reference must resolve (with -W a dangling one fails the build).
nitpicky = True
nitpick_ignore_regex = [
    # Types named in docstrings that belong to other projects (no intersphinx offline).
    (r"py:class", r"(torch|transformers|sklearn|pandas|numpy|np|pd|matplotlib|nn|collections|typing)\..*"),
    (r"py:class", r"(array-like|ndarray|DataFrame|Series|Bunch|Module|Tensor|callable|path-like|dtype|optional|default.*|of shape.*|.*\bof\b.*)"),
    (r"py:class", r"(str|int|float|bool|dict|list|tuple|None|object|type|bytes|sequence|iterable|mapping)"),
    (r"py:class", r"\{.*|.*\}|\".*\"|'.*'"),
]

# --- autodoc, autosummary, numpydoc ---------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False  # the class template lists methods itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "RT01", "SA01", "EX01"}
numpydoc_validation_exclude = {
    r"\.set_(fit|partial_fit|score|predict)_request$",  # scikit-learn's metadata routing
    # Overrides of a documented base method (Router's protocol, Callback's events): documented there.
    r"\.(UniformRouter|PolyRouter|GateRouter|ExclusiveMixer)\.(forward|mix|per_task_parameters|add_tasks|task_weights)$",
    r"\.on_(fit_begin|epoch_begin|batch_end|epoch_end|fit_end)$",
    r"\.(get|set)_params$",
    r"\.__init__$",
    r"\.BackboneCacheInfo\.(hits|misses|maxsize|currsize)$",  # fields, documented in the class's Parameters
}

# --- myst ------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4  # `page.md#a-heading` links resolve like GitHub's
suppress_warnings = ["myst.header"]  # result files jump heading levels; they are rendered as written

# --- sphinx-gallery ---------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": str(DOCS / "auto_examples"),
    # Every script of examples/ is an example and runs: none is skipped.
    "filename_pattern": r".*\.py$",
    "ignore_pattern": r"^_",
    "within_subsection_order": "FileNameSortKey",
    # "Examples using X" on each API page (the minigallery directive of the templates).
    "doc_module": ("skillfit",),
    "backreferences_dir": str(DOCS / "generated" / "backreferences"),
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "plot_gallery": "True",
    "capture_repr": ("_repr_html_", "__repr__"),
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "show_memory": False,
    "min_reported_time": 1,
}

# --- HTML --------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skillfit {version}"
html_static_path = ["_static"]
html_favicon = "_static/skillfit.svg"
html_logo = "_static/skillfit.svg"
html_theme_options = {
    "logo": {"text": "skillfit"},
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 4,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
html_last_updated_fmt = None

# --- linkcheck: internal links only (no internet on CI) ----------------------------------
linkcheck_ignore = [r"https?://.*", r"mailto:.*"]
linkcheck_anchors = True
