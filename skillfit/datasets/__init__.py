"""Small bundled datasets for examples, tests and documentation.

Currently provides :func:`load_demo_tasks`, a multi-task text classification
dataset built from human-labelled, MIT-licensed sources (see
``docs/datasets.md``).
"""

from skillfit.datasets._demo import load_demo_tasks

__all__ = ["load_demo_tasks"]
