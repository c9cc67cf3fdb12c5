"""Experiment loggers as callbacks: a CSV file, MLflow and TensorBoard.

Each logger records, for every ``fit`` or ``adapt`` call, the
estimator's parameters (``get_params()``) once and, at each epoch's end, its metrics:
``loss``, ``validation_score`` (with validation data) and each task's (``validation/<task>``),
the learning rates after the epoch, and the epoch's seconds. The step of a metric is the
epoch's position in ``history_``, so a warm fit or ``adapt`` continues the curve. In a
data-parallel fit the loggers run on rank 0 only.

:class:`MLflowLogger` needs ``pip install 'skillfit[mlflow]'``; :class:`TensorBoardLogger`
needs ``pip install 'skillfit[tensorboard]'``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .callbacks import Callback, TrainingState

__all__ = ["CSVLogger", "MLflowLogger", "TensorBoardLogger"]

CSV_COLUMNS = ("call", "stage", "epoch", "loss", "validation_score", "learning_rate", "router_learning_rate",
               "time", "global_step")
MLFLOW_PARAM_LIMIT = 6000  # characters MLflow stores of one parameter value


def logged_params(estimator: Any) -> dict[str, str]:
    """The estimator's parameters as strings (callbacks left out: they are the loggers themselves)."""
    params = estimator.get_params(deep=False)
    params.pop("callbacks", None)
    return {name: value if isinstance(value, str) else repr(value) for name, value in params.items()}


def epoch_metrics(state: TrainingState) -> dict[str, float]:
    """The metrics of the epoch that just ended: loss, validation scores, learning rates, seconds."""
    metrics = {"loss": float(state.loss)}
    if state.validation_score is not None:
        metrics["validation_score"] = float(state.validation_score)
    for task, score in (state.task_scores or {}).items():
        metrics[f"validation/{task}"] = float(score)
    metrics.update({name: float(rate) for name, rate in state.learning_rates.items()})
    metrics["time"] = float(state.record["time"])
    return metrics


def _needs(module: str, extra: str, logger: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{logger} needs {module}, which is not installed. Install it with "
                          f"pip install 'skillfit[{extra}]', or remove the logger from callbacks.")


class CSVLogger(Callback):
    """Append one row per epoch to a CSV file, and write the parameters beside it as JSON.

    Parameters
    ----------
    path : str or path-like
        The CSV file; created with a header row when missing or empty, appended to
        otherwise. Its columns: call, stage, epoch (its position in ``history_``), loss,
        validation_score, learning_rate, router_learning_rate, time, global_step.
    params_path : str or path-like, optional
        Where each call writes the estimator's parameters (JSON); default: ``path`` with
        the suffix ``.params.json``.

    See Also
    --------
    MLflowLogger, TensorBoardLogger : The same records, for MLflow and TensorBoard.

    Examples
    --------
    >>> from skillfit.loggers import CSVLogger
    >>> CSVLogger("runs/poly.csv").params_path
    PosixPath('runs/poly.params.json')
    """

    def __init__(self, path: str | os.PathLike, params_path: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        self.params_path = Path(params_path) if params_path is not None else self.path.with_suffix(".params.json")

    def on_fit_begin(self, state: TrainingState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.params_path.write_text(json.dumps(logged_params(state.estimator), indent=1, sort_keys=True) + "\n")

    def on_epoch_end(self, state: TrainingState) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        row = {"call": state.call, "stage": state.stage, "epoch": len(state.history), "loss": state.loss,
               "validation_score": state.validation_score, "time": state.record["time"],
               "global_step": state.global_step, **state.learning_rates}
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({column: "" if row.get(column) is None else row[column] for column in CSV_COLUMNS})


class MLflowLogger(Callback):
    """Log each call as an MLflow run: parameters, per-epoch metrics, and the fitted model's folder.

    Parameters
    ----------
    tracking_uri : str, optional
        Where runs go (a server's URL, ``"databricks"``, a local folder); default:
        MLflow's own (``MLFLOW_TRACKING_URI``, else ``./mlruns``).
    experiment_name : str, default="skillfit"
        The experiment of the runs; created when missing.
    run_name : str, optional
        Each run's name (MLflow draws one when None).
    log_model : bool, default=True
        At the end of a successful call, ``save_pretrained`` the estimator into a
        temporary folder and log it as the run's ``model`` artifact directory.
    tags : dict, optional
        Tags of each run.

    Attributes
    ----------
    run_ids_ : list of str
        The runs this logger created, one per call.

    See Also
    --------
    CSVLogger, TensorBoardLogger : The same records, in a CSV file or TensorBoard.

    Examples
    --------
    >>> from skillfit.loggers import MLflowLogger
    >>> MLflowLogger(experiment_name="poly-search").log_model
    True
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "skillfit", run_name: str | None = None,
                 log_model: bool = True, tags: dict[str, str] | None = None) -> None:
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.log_model, self.tags = log_model, tags
        self.run_ids_: list[str] = []

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def on_fit_begin(self, state: TrainingState) -> None:
        _needs("mlflow", "mlflow", "MLflowLogger")
        from mlflow.entities import Param

        client = self._client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment_name)
        tags = {"skillfit.call": state.call, "skillfit.estimator": type(state.estimator).__name__, **(self.tags or {})}
        run = client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_ids_.append(run.info.run_id)
        params = [Param(name, value[:MLFLOW_PARAM_LIMIT]) for name, value in logged_params(state.estimator).items()]
        client.log_batch(run.info.run_id, params=params)

    def on_epoch_end(self, state: TrainingState) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(_metric_name(name), value, stamp, len(state.history))
                   for name, value in epoch_metrics(state).items()]
        self._client().log_batch(self.run_ids_[-1], metrics=metrics)

    def on_fit_end(self, state: TrainingState) -> None:
        client = self._client()
        if self.log_model:
            with tempfile.TemporaryDirectory() as folder:
                state.estimator.save_pretrained(folder)
                client.log_artifacts(self.run_ids_[-1], folder, "model")
        client.set_terminated(self.run_ids_[-1], "FINISHED")


def _metric_name(name: str) -> str:
    """MLflow's metric names allow letters, digits, ``_ - . / :`` and spaces; a task id may hold others."""
    return "".join(char if char.isalnum() or char in "_-./: " else "_" for char in name)


class TensorBoardLogger(Callback):
    """Write TensorBoard event files: per-epoch scalars and the parameters as a text table.

    Parameters
    ----------
    log_dir : str or path-like
        The folder of the event files (``tensorboard --logdir`` reads it).

    See Also
    --------
    CSVLogger, MLflowLogger : The same records, in a CSV file or MLflow.

    Examples
    --------
    >>> from skillfit.loggers import TensorBoardLogger
    >>> TensorBoardLogger("runs/poly").log_dir
    'runs/poly'
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = str(log_dir)
        self._writer = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_writer": None}  # an open event file does not travel

    def __deepcopy__(self, memo: dict) -> "TensorBoardLogger":
        return TensorBoardLogger(self.log_dir)

    def on_fit_begin(self, state: TrainingState) -> None:
        _needs("tensorboard", "tensorboard", "TensorBoardLogger")
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(self.log_dir)
        rows = "\n".join(f"| {name} | {value} |" for name, value in logged_params(state.estimator).items())
        self._writer.add_text(f"params/{state.call}", "| parameter | value |\n|---|---|\n" + rows, len(state.history))

    def on_epoch_end(self, state: TrainingState) -> None:
        for name, value in epoch_metrics(state).items():
            self._writer.add_scalar(name, value, len(state.history))
        self._writer.flush()

    def on_fit_end(self, state: TrainingState) -> None:
        self._writer.close()
        self._writer = None
