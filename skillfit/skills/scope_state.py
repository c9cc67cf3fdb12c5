"""Attributes of a :class:`~skillfit.skills.TaskContext` that each thread holds on its own.

A context's scopes (the batch's task ids, the inference cache, the bypass, content
routing, the training noise) describe the forward pass that the calling thread is
running. One fitted model serves several threads at once, so each thread must see the
scopes it opened and nothing of another's: the scope attributes live in a
``threading.local`` of the context. What belongs to the model itself (the PEMT task
descriptions) stays an ordinary attribute, shared by every thread.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class PerThread:
    """A data descriptor whose value is kept per thread, starting from ``default()`` in each."""

    def __init__(self, default: Callable[[], Any] = lambda: None) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        values = thread_values(instance)
        if self.name not in values:
            values[self.name] = self.default()
        return values[self.name]

    def __set__(self, instance: Any, value: Any) -> None:
        thread_values(instance)[self.name] = value


def thread_values(instance: Any) -> dict[str, Any]:
    """The calling thread's values of ``instance``'s per-thread attributes."""
    local = instance.__dict__.get("_per_thread")
    if local is None:  # made lazily: instances restored from old pickles have none
        local = instance.__dict__.setdefault("_per_thread", threading.local())
    values = getattr(local, "values", None)
    if values is None:
        values = local.values = {}
    return values


class HasPerThreadState:
    """Pickling and copying of a class with :class:`PerThread` attributes: the thread state is left out.

    A copy starts with no scope open in any thread, as a fresh object does. Attributes
    that older pickles stored in the instance's own ``__dict__`` are dropped on load.
    """

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_per_thread"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        per_thread = {name for klass in type(self).__mro__ for name, value in vars(klass).items()
                      if isinstance(value, PerThread)}
        self.__dict__.update({key: value for key, value in state.items() if key not in per_thread})
