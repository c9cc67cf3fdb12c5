"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands(text):
    return [line for line in text.splitlines() if line.startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    readme = _commands((ROOT / "README.md").read_text())
    ci = _commands((ROOT / ".ci" / "run").read_text())
    assert len(readme) == 2, "the README starts with the main-job and the test command"
    assert readme[1].endswith("python -m pytest")
    assert ci == [readme[1]]
    assert readme[0].endswith("python examples/quickstart.py")
