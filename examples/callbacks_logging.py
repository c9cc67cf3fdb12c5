"""
Callbacks and experiment logging
================================

``fit`` and ``adapt`` call your code at fixed points: at the start and end of the call,
of each epoch, and after each step (:mod:`skillfit.callbacks`). A callback sees the
epoch, the step, the loss, the learning rates and the validation scores, and may stop
the training. The loggers of :mod:`skillfit.loggers` are callbacks: a CSV file (no extra
needed), MLflow (``pip install 'skillfit[mlflow]'``) and TensorBoard
(``pip install 'skillfit[tensorboard]'``).

The backbone is the offline all-MiniLM-L6-v2. Run it as a script:
``python examples/callbacks_logging.py``; ``SKILLFIT_EXAMPLE_SIZE=small`` trains on 32
texts per task instead of 200 (the documentation build on CI does this).
"""

# %%
# A callback of your own: stop once the loss is low enough
# --------------------------------------------------------

import importlib.util
import os
import tempfile
from pathlib import Path

import pandas as pd

from skillfit import CPolyClassifier
from skillfit.callbacks import Callback
from skillfit.datasets import load_demo_tasks
from skillfit.loggers import CSVLogger

# ``PER_TASK``: 200, or 32 with ``SKILLFIT_EXAMPLE_SIZE=small`` in the environment (see the script).
# sphinx_gallery_start_ignore
SIZE = os.environ.get("SKILLFIT_EXAMPLE_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"SKILLFIT_EXAMPLE_SIZE must be 'full' or 'small'; got {SIZE!r}.")
PER_TASK = 32 if SIZE == "small" else 200
# sphinx_gallery_end_ignore
TASKS = ["sms_spam", "question_type", "tweet_sentiment"]

X, y = load_demo_tasks(split="train", return_X_y=True)
X = X[X["task"].isin(TASKS)].groupby("task").head(PER_TASK)
y = y.loc[X.index]


class StopBelowLoss(Callback):
    """Stop after the first epoch whose mean loss is below ``threshold``; note each epoch's rates."""

    def __init__(self, threshold):
        self.threshold = threshold

    def on_fit_begin(self, state):
        self.rates = []  # per-fit state is reset here: one instance sees every fit of its estimator

    def on_epoch_end(self, state):
        self.rates.append(state.learning_rates["learning_rate"])
        if state.loss < self.threshold:
            print(f"epoch {state.epoch}: loss {state.loss:.3f} < {self.threshold}; stopping")
            state.stop_training = True


# %%
# Log to a CSV file while the callback watches
# --------------------------------------------
# Callbacks are a parameter: ``clone`` and every search copy them with the estimator.

workdir = Path(tempfile.mkdtemp(prefix="skillfit-callbacks-"))
stopper = StopBelowLoss(threshold=0.8)
clf = CPolyClassifier(n_shared=2, n_exclusive=1, max_epochs=6, max_length=64, random_state=0,
                      callbacks=[stopper, CSVLogger(workdir / "cpoly.csv")])
clf.fit(X, y)
print(f"trained {clf.n_iter_} of {clf.max_epochs} epochs; learning rate after each: "
      + ", ".join(f"{rate:.2e}" for rate in stopper.rates))
print(pd.read_csv(workdir / "cpoly.csv", keep_default_na=False).round(4).to_string(index=False))

# %%
# MLflow and TensorBoard
# ----------------------
# The same records go to an MLflow run (with the fitted model's folder as an artifact)
# or to TensorBoard event files. Each needs its extra; without it the logger says so.

if importlib.util.find_spec("mlflow") is not None:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder store for this example
    from skillfit.loggers import MLflowLogger

    mlflow_logger = MLflowLogger(tracking_uri=(workdir / "mlruns").as_uri(), experiment_name="callbacks-example")
    clf.set_params(callbacks=[mlflow_logger], max_epochs=2).fit(X, y)
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=(workdir / "mlruns").as_uri()).get_run(mlflow_logger.run_ids_[-1])
    print("MLflow run", run.info.run_id[:8], run.info.status, {k: round(v, 4) for k, v in sorted(run.data.metrics.items())})

if importlib.util.find_spec("tensorboard") is not None:
    from skillfit.loggers import TensorBoardLogger

    clf.set_params(callbacks=[TensorBoardLogger(workdir / "tensorboard")], max_epochs=2).fit(X, y)
    print("TensorBoard event files:", sorted(path.name[:40] for path in (workdir / "tensorboard").iterdir()))
