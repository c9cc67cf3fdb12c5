"""Small bundled datasets for examples, tests and documentation.

:func:`load_demo_tasks` is a multi-task text classification dataset built from
human-labelled, MIT-licensed sources; :func:`load_demo_text2text` gives the same
tasks in text-to-text form plus a generative dialogue task (see
``docs/datasets.md``).
"""

from skillfit.datasets._demo import INSTRUCTIONS, load_demo_tasks, load_demo_text2text

__all__ = ["INSTRUCTIONS", "load_demo_tasks", "load_demo_text2text"]
