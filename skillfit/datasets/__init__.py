"""Small bundled datasets for examples, tests and documentation.

:func:`load_demo_tasks` is a multi-task text classification dataset built from
human-labelled, MIT-licensed sources; :func:`load_demo_text2text` gives the same
tasks in text-to-text form plus a generative dialogue task.
:func:`load_many_tasks` holds 172 small few-shot binary tasks (TREC question
classes, fortune cookie topics, VADER sentiment and text types, SMS spam) that
share labels and text domains. :func:`load_instruction_tasks` holds text-to-text tasks
of Super-NaturalInstructions with their definitions. :func:`make_tiny_backbone` builds a tiny random
transformer offline, for examples and pipeline tests. See ``docs/datasets.md``.
"""

from skillfit.datasets._demo import INSTRUCTIONS, load_demo_tasks, load_demo_text2text
from skillfit.datasets._instructions import load_instruction_tasks
from skillfit.datasets._many_tasks import load_many_tasks
from skillfit.datasets._tiny import make_tiny_backbone

__all__ = ["INSTRUCTIONS", "load_demo_tasks", "load_demo_text2text", "load_instruction_tasks", "load_many_tasks", "make_tiny_backbone"]
