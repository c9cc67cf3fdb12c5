"""The README.md model card written by ``save_pretrained``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import SkillEstimatorBase

_TRAINING_PARAMETERS = ("rank", "alpha", "learning_rate", "max_epochs", "batch_size", "max_length", "random_state")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def model_card(estimator: "SkillEstimatorBase", config: dict[str, Any]) -> str:
    """A Hugging Face style model card: front matter, tasks, scores, usage, training settings."""
    name = type(estimator).__name__
    backbone = config["backbone"]
    lines = ["---", "library_name: skillfit"]
    if "/" in estimator.backbone and not estimator.backbone.startswith(("/", ".", "~")):
        lines.append(f"base_model: {estimator.backbone}")  # a hub id, not a local path
    lines += [
        "tags:",
        "- skillfit",
        "- multi-task",
        "- peft",
        "---",
        "",
        f"# {name} on {estimator.backbone}",
        "",
        f"A multi-task {name} trained with skillfit: "
        f"{estimator.n_trainable_params_:,} trained parameters over a frozen backbone.",
        "",
        f"- Backbone: `{estimator.backbone}`, revision `{backbone.get('revision')}`, weights sha256 `{backbone.get('sha256')}`"
        + (" (included in `backbone/`)" if backbone.get("embedded") else " (loaded by name, then checked against the hash)"),
        f"- Epochs run: {estimator.n_iter_}",
        "",
        "## Tasks",
        "",
    ]
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        mask = estimator.network_.label_mask.cpu().numpy()
        rows = [[task, ", ".join(str(label) for label, on in zip(classes.tolist(), mask[i]) if on)] for i, task in enumerate(estimator.tasks_.tolist())]
        lines.append(_table(["task", "labels"], rows))
    else:
        lines.append(", ".join(f"`{task}`" for task in estimator.tasks_.tolist()))
    lines += ["", "## Scores", ""]
    known = False
    task_scores = getattr(estimator, "validation_task_scores_", None)
    if task_scores:
        kind = "negative mean loss" if estimator.validation_scoring == "loss" else "score"
        lines += [f"Validation ({kind}, higher is better) of the kept weights:", ""]
        lines.append(_table(["task", "validation"], [[task, score] for task, score in task_scores.items()]))
        lines.append("")
        known = True
    for metric, per_task in (config.get("scores") or {}).items():
        if isinstance(per_task, dict):
            lines.append(_table(["task", metric], [[task, score] for task, score in per_task.items()]))
        else:
            lines.append(f"- {metric}: {_cell(per_task)}")
        lines.append("")
        known = True
    if not known:
        lines += ["No scores were recorded; pass `scores=` to `save_pretrained` or fit with validation data.", ""]
    lines += [
        "## Usage",
        "",
        "```python",
        f"from skillfit import {name}",
        "",
        f'model = {name}.from_pretrained("path/to/this/folder")',
        f"model.predict([(\"some text\", {estimator.tasks_.tolist()[0]!r})])",
        "```",
        "",
        "## Training",
        "",
        _table(["parameter", "value"], [[key, str(getattr(estimator, key))] for key in _TRAINING_PARAMETERS if hasattr(estimator, key)]),
        "",
        "Versions: " + ", ".join(f"{lib} {version}" for lib, version in config["versions"].items()),
        "",
    ]
    return "\n".join(lines)
