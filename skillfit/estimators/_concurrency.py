"""Which calls may share one fitted estimator across threads, and a clear error for those that may not.

Calls that read a fitted model (``predict``, ``predict_proba``, ``score``,
``predict_task``, ``save_pretrained``, ...) run together from any number of threads.
Calls that change it (``fit``, ``adapt``, ``fit_task_identifier``, ``set_params``)
need the estimator to themselves: one made while another thread reads or changes the
same estimator raises :class:`ConcurrentUseError` at once, before touching anything,
and so does a read while another thread changes it. The thread that runs a change may
read inside it (``fit`` scores its validation rows). Copies (``copy.deepcopy``,
``pickle``, ``sklearn.base.clone``) are separate estimators with no shared guard.

The bookkeeping lives outside the estimator (a weak map), so it is never pickled,
copied or compared, and the estimator's ``__dict__`` is the same before and after.
"""

from __future__ import annotations

import functools
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar


class ConcurrentUseError(RuntimeError):
    """A call that changes an estimator overlapped another call on the same estimator in another thread.

    Raised before the call changes anything: the estimator stays as it was. Wait for
    the other call to end, or give each thread its own copy (``copy.deepcopy(est)`` or
    ``pickle``; the frozen backbone is shared, the adapters are copied). Which calls
    may overlap is listed in the docs' "Serving from threads" (``docs/saving.md``).

    See Also
    --------
    skillfit.PolyClassifier.predict : A call that any number of threads may make at once.
    skillfit.PolyClassifier.fit : A call that needs the estimator to itself.

    References
    ----------
    .. [1] Python documentation, "threading: Thread-based parallelism",
       https://docs.python.org/3/library/threading.html.

    Examples
    --------
    >>> from skillfit import ConcurrentUseError
    >>> issubclass(ConcurrentUseError, RuntimeError)
    True
    """


class _Usage:
    """Who is inside an estimator now: reading threads (each with its calls, outermost first) and at most one changing thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readers: dict[int, list[str]] = {}
        self.writer: int | None = None
        self.writer_depth = 0
        self.writer_call = ""


_USAGES: "weakref.WeakKeyDictionary[Any, _Usage]" = weakref.WeakKeyDictionary()
_USAGES_LOCK = threading.Lock()


def _usage(estimator: Any) -> _Usage:
    with _USAGES_LOCK:
        usage = _USAGES.get(estimator)
        if usage is None:
            usage = _USAGES[estimator] = _Usage()
        return usage


def _refusal(estimator: Any, call: str, other: str) -> ConcurrentUseError:
    name = type(estimator).__name__
    return ConcurrentUseError(
        f"{name}.{call} was called while another thread runs {name}.{other} on the same estimator. "
        f"{other if other in CHANGES else call} changes the fitted model, so it needs the estimator to itself: "
        "wait for the other call to finish, or give each thread its own copy (copy.deepcopy(estimator); "
        "the frozen backbone is shared, not copied). Predictions may run in any number of threads at once."
    )


@contextmanager
def reading(estimator: Any, call: str) -> Iterator[None]:
    """A scope that reads the fitted model: shared with other readers, refused while another thread changes it."""
    usage, me = _usage(estimator), threading.get_ident()
    with usage.lock:
        if usage.writer is not None and usage.writer != me:
            raise _refusal(estimator, call, usage.writer_call)
        usage.readers.setdefault(me, []).append(call)
    try:
        yield
    finally:
        with usage.lock:
            usage.readers[me].pop()
            if not usage.readers[me]:
                del usage.readers[me]


@contextmanager
def changing(estimator: Any, call: str) -> Iterator[None]:
    """A scope that changes the estimator: refused while any other thread reads or changes it."""
    usage, me = _usage(estimator), threading.get_ident()
    with usage.lock:
        if usage.writer is not None and usage.writer != me:
            raise _refusal(estimator, call, usage.writer_call)
        others = [calls[0] for thread, calls in usage.readers.items() if thread != me]
        if others:
            raise _refusal(estimator, call, others[0])
        if usage.writer is None:
            usage.writer, usage.writer_call = me, call
        usage.writer_depth += 1
    try:
        yield
    finally:
        with usage.lock:
            usage.writer_depth -= 1
            if not usage.writer_depth:
                usage.writer, usage.writer_call = None, ""


# The calls that change the fitted model; each estimator wraps them with changes_model.
CHANGES = ("fit", "adapt", "fit_task_identifier", "set_params")

Method = TypeVar("Method", bound=Callable[..., Any])


def _guarded_by(scope: Callable[[Any, str], Any], method: Method) -> Method:
    """``method`` run inside ``scope(self, its name)``."""
    @functools.wraps(method)
    def guarded(self, *args: Any, **kwargs: Any) -> Any:
        with scope(self, method.__name__):
            return method(self, *args, **kwargs)

    return guarded  # type: ignore[return-value]


def reads_model(method: Method) -> Method:
    """Run ``method`` inside :func:`reading` (its name names the call in errors)."""
    return _guarded_by(reading, method)


def changes_model(method: Method) -> Method:
    """Run ``method`` inside :func:`changing` (its name names the call in errors)."""
    return _guarded_by(changing, method)


# A fast tokenizer keeps its truncation and padding settings in its Rust object and changes
# them when a call asks for others; a change while another thread encodes with it raises
# "Already borrowed". Every call of ours goes through one lock per tokenizer.
_TOKENIZER_LOCKS: "weakref.WeakKeyDictionary[Any, threading.Lock]" = weakref.WeakKeyDictionary()


def _tokenizer_lock(tokenizer: Any) -> threading.Lock:
    with _USAGES_LOCK:
        lock = _TOKENIZER_LOCKS.get(tokenizer)
        if lock is None:
            lock = _TOKENIZER_LOCKS[tokenizer] = threading.Lock()
        return lock


def tokenize(tokenizer: Any, *args: Any, **kwargs: Any) -> Any:
    """``tokenizer(*args, **kwargs)``, one thread at a time per tokenizer."""
    with _tokenizer_lock(tokenizer):
        return tokenizer(*args, **kwargs)


def batch_decode(tokenizer: Any, *args: Any, **kwargs: Any) -> list[str]:
    """``tokenizer.batch_decode(...)``, one thread at a time per tokenizer."""
    with _tokenizer_lock(tokenizer):
        return tokenizer.batch_decode(*args, **kwargs)
