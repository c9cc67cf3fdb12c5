"""Where pickles made before the ``_task_free`` package find ``TaskIdentifier`` (a network's module)."""

from ._task_free.task_identifier import TaskIdentifier

__all__ = ["TaskIdentifier"]
