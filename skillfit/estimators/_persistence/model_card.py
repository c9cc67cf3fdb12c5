"""The README.md model card written by ``save_pretrained``."""

from __future__ import annotations

from typing import Any

import numpy as np

_TRAINING_PARAMETERS = ("rank", "alpha", "learning_rate", "max_epochs", "batch_size", "max_length", "random_state")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def model_card(
    config: dict[str, Any], *, params: dict[str, Any], fitted: dict[str, Any], label_mask: np.ndarray | None
) -> str:
    """A Hugging Face style model card: front matter, tasks, scores, usage, training settings.

    Parameters
    ----------
    config : dict
        The folder's JSON config (estimator name, backbone reference, scores, versions).
    params, fitted : dict
        The estimator's parameters and stored fitted attributes.
    label_mask : ndarray of shape (n_tasks, n_classes) or None
        Which labels each task predicts (classifiers).
    """
    sections = [
        _header(config, params, fitted),
        ["## Tasks", "", _tasks_table(fitted, label_mask), ""],
        ["## Scores", "", *_scores(config, params, fitted)],
        _usage(config, params, fitted),
    ]
    return "\n".join(line for section in sections for line in section)


def _header(config: dict[str, Any], params: dict[str, Any], fitted: dict[str, Any]) -> list[str]:
    name, backbone_name, backbone = config["estimator"], params["backbone"], config["backbone"]
    lines = ["---", "library_name: skillfit"]
    if "/" in backbone_name and not backbone_name.startswith(("/", ".", "~")):
        lines.append(f"base_model: {backbone_name}")  # a hub id, not a local path
    embedded = " (included in `backbone/`)" if backbone.get("embedded") else " (loaded by name, then checked against the hash)"
    return lines + [
        "tags:", "- skillfit", "- multi-task", "- peft", "---", "",
        f"# {name} on {backbone_name}",
        "",
        f"A multi-task {name} trained with skillfit: "
        f"{fitted['n_trainable_params_']:,} trained parameters over a frozen backbone.",
        "",
        f"- Backbone: `{backbone_name}`, revision `{backbone.get('revision')}`, weights sha256 `{backbone.get('sha256')}`"
        + embedded,
        f"- Epochs run: {fitted['n_iter_']}",
        "",
    ]


def _tasks_table(fitted: dict[str, Any], label_mask: np.ndarray | None) -> str:
    tasks, classes = fitted["tasks_"].tolist(), fitted.get("classes_")
    if classes is None or label_mask is None:
        return ", ".join(f"`{task}`" for task in tasks)
    rows = [[task, ", ".join(str(label) for label, on in zip(classes.tolist(), label_mask[i]) if on)] for i, task in enumerate(tasks)]
    return _table(["task", "labels"], rows)


def _scores(config: dict[str, Any], params: dict[str, Any], fitted: dict[str, Any]) -> list[str]:
    lines = []
    task_scores = fitted.get("validation_task_scores_")
    if task_scores:
        kind = "negative mean loss" if params["validation_scoring"] == "loss" else "score"
        lines += [f"Validation ({kind}, higher is better) of the kept weights:", ""]
        lines += [_table(["task", "validation"], [[task, score] for task, score in task_scores.items()]), ""]
    for metric, per_task in (config.get("scores") or {}).items():
        if isinstance(per_task, dict):
            lines.append(_table(["task", metric], [[task, score] for task, score in per_task.items()]))
        else:
            lines.append(f"- {metric}: {_cell(per_task)}")
        lines.append("")
    return lines or ["No scores were recorded; pass `scores=` to `save_pretrained` or fit with validation data.", ""]


def _usage(config: dict[str, Any], params: dict[str, Any], fitted: dict[str, Any]) -> list[str]:
    name = config["estimator"]
    return [
        "## Usage",
        "",
        "```python",
        f"from skillfit import {name}",
        "",
        f'model = {name}.from_pretrained("path/to/this/folder")',
        f"model.predict([(\"some text\", {fitted['tasks_'].tolist()[0]!r})])",
        "```",
        "",
        "## Training",
        "",
        _table(["parameter", "value"], [[key, str(params[key])] for key in _TRAINING_PARAMETERS if key in params]),
        "",
        "Versions: " + ", ".join(f"{lib} {version}" for lib, version in config["versions"].items()),
        "",
    ]
