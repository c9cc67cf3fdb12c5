"""Hypothesis strategies for what users pass at skillfit's boundaries, and the property every call must keep.

The property (``assert_clean``): a call either works, or raises ``ValueError`` /
``TypeError`` (or ``OSError`` for files, the documented ``FloatingPointError`` of a diverged fit,
``ConcurrentUseError``) from skillfit's own
code, with a message, and leaves the estimator as it was. An exception raised inside
torch, transformers, numpy, tokenizers, scikit-learn or ``re`` breaks it, as does a
change to the estimator made by a call that failed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import strategies as st

import skillfit

PACKAGE = str(Path(skillfit.__file__).resolve().parent) + os.sep
# What a call may raise: bad values and types, files, and the documented FloatingPointError of a
# fit whose loss diverged (a learning rate of 1e18 is a value, not a type error).
CLEAN = (ValueError, TypeError, OSError, FloatingPointError, skillfit.ConcurrentUseError)

# ------------------------------------------------------------------------ cells
unicode_text = st.text(st.characters(codec=None), max_size=12)  # any code point, unpaired surrogates included
cells = st.one_of(
    st.text(max_size=20), unicode_text, st.just(""), st.just("   "), st.just("\ud800 broken"),
    st.text(min_size=3000, max_size=4000), st.binary(max_size=6), st.integers(), st.floats(allow_nan=True),
    st.none(), st.just(float("nan")), st.just(pd.NA), st.booleans(),
    st.lists(st.text(max_size=3), max_size=3), st.tuples(st.text(max_size=3), st.integers()),
    st.just(np.str_("a numpy string")), st.just(np.float32(1.5)),
)
task_ids = st.one_of(
    st.sampled_from(["alpha", "beta", "gamma"]), st.text(max_size=4), st.integers(-5, 5),
    st.integers(min_value=2**63, max_value=2**80), st.integers(max_value=-(2**63) - 1, min_value=-(2**80)),
    st.floats(allow_nan=True), st.booleans(), st.none(), st.just(pd.NA), st.just(float("nan")),
    st.tuples(st.text(max_size=2), st.integers()), st.frozensets(st.integers(), max_size=2),
    st.just(np.int64(1)), st.just(np.int8(-3)), st.just(np.uint64(2**64 - 1)), st.just(np.float64(2.0)),
    st.just(np.bool_(True)), st.just(np.str_("alpha")), st.just(pd.Timestamp("2020-01-01")), st.binary(max_size=3),
)
rows = st.lists(st.tuples(st.one_of(st.text(min_size=1, max_size=30), cells), task_ids), max_size=6)


def containers(pairs: list) -> st.SearchStrategy:
    """Every container a user may hand over for the same pairs."""
    texts, tasks = [p[0] for p in pairs], [p[1] for p in pairs]

    def frame():
        return pd.DataFrame({"text": pd.Series(texts, dtype=object), "task": pd.Series(tasks, dtype=object)})

    def array():
        out = np.empty((len(pairs), 2), dtype=object)
        for i, (text, task) in enumerate(pairs):
            out[i, 0], out[i, 1] = text, task
        return out

    return st.sampled_from([
        lambda: list(pairs), lambda: tuple(pairs), array, frame, lambda: iter(pairs), lambda: (p for p in pairs),
        lambda: {"text": texts, "task": tasks}, lambda: pd.Series(texts, dtype=object), lambda: [list(p) for p in pairs],
        lambda: np.asarray(texts, dtype=object), lambda: texts, lambda: frame().set_index("task"),
    ]).map(lambda make: make())


inputs = rows.flatmap(containers)

# ------------------------------------------------- valid inputs, to check what a fit keeps
WORDS = ("w1 apple pie", "w2 red sky", "w3 cold tea", "w1 w2 w3", "apple")
INT64 = (-(2**63), 2**63 - 1)


@st.composite
def faithful_fits(draw) -> tuple[list, list, list, list]:
    """Valid ``(pairs, y, tasks, labels)`` of one kind of task id and one kind of label, in any user type."""
    if draw(st.booleans(), label="string task ids"):
        names = st.one_of(st.text(min_size=1, max_size=8), st.sampled_from([np.str_("alpha"), "beta", " padded "]))
        pool = draw(st.lists(names, min_size=1, max_size=3, unique_by=str), label="task pool")
    else:
        numbers = st.one_of(st.integers(*INT64), st.sampled_from([np.int64(3), np.uint8(4), np.int16(-2), 2**63 - 1]))
        pool = draw(st.lists(numbers, min_size=1, max_size=3, unique_by=int), label="task pool")
    classes = draw(st.sampled_from([["yes", "no"], [0, 1], [np.int64(5), np.int64(-1)], [True, False], ["x", "y", "z"],
                                    [np.str_("p"), "q"]]), label="label pool")
    n = draw(st.integers(2, 8), label="rows")
    pairs = [(draw(st.sampled_from(WORDS)), draw(st.sampled_from(pool))) for _ in range(n)]
    y = [draw(st.sampled_from(classes)) for _ in range(n)]
    return pairs, y, [task for _, task in pairs], y
targets = st.lists(st.one_of(st.sampled_from(["alpha:yes", "alpha:no", "beta:yes"]), cells, task_ids), max_size=7)

# ------------------------------------------------------------------- parameters
parameter_values = st.one_of(
    st.integers(-3, 3), st.integers(min_value=2**62, max_value=2**80), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "(", "[a-", "*", "?", "auto", "all-linear", "none", "\ud800", "query|(", "1e-3", "x" * 300]),
    st.none(), st.booleans(), st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.just(np.float64("nan")), st.just(np.int64(2)),
    st.just(b"bytes"), st.just(object()),
)


# ------------------------------------------------------------------ the property
def state_of(estimator) -> bytes | None:
    """The estimator's whole state as bytes (its pickle), to compare before and after a call."""
    try:
        return pickle.dumps(estimator)
    except Exception:  # an estimator holding an unpicklable parameter value (object())
        return None


def assert_clean(call, estimator=None):
    """Run ``call``; if it raises, the error must be ours, clear, and leave ``estimator`` as it was."""
    before = state_of(estimator) if estimator is not None else None
    try:
        return call()
    except Exception as error:
        origin = _origin(error)
        assert isinstance(error, CLEAN), f"{type(error).__name__} from {origin}: {error}"
        assert origin.startswith(PACKAGE), (
            f"{type(error).__name__} raised inside {origin}, not by skillfit: {error}")
        assert len(str(error)) >= 20, f"a message too short to say what to change: {error!r}"
        if before is not None:
            assert state_of(estimator) == before, f"the failed call changed the estimator ({error})"
        return error


def _origin(error: BaseException) -> str:
    """The file of the frame that raised ``error`` (the innermost of its traceback)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename if tb is not None else "?"


def register_profiles(settings) -> None:
    """``ci``: few examples, for every run; ``nightly``: a deep search (SKILLFIT_HYPOTHESIS_PROFILE=nightly)."""
    from hypothesis import HealthCheck

    common = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=False, print_blob=True)
    settings.register_profile("ci", max_examples=25, **common)
    settings.register_profile("nightly", max_examples=1000, **common)
    settings.load_profile(os.environ.get("SKILLFIT_HYPOTHESIS_PROFILE", "ci"))

