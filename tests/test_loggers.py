"""loggers: a CSV file, an MLflow tracking store and TensorBoard event files, each read back by its own reader."""

import csv
import json

import numpy as np
import pytest

from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier
from skillfit.loggers import CSVLogger, MLflowLogger, TensorBoardLogger

X, Y = make_multitask(12)
TINY = dict(max_epochs=3, random_state=0, rank=2, max_length=16, batch_size=8)


def _fit(logger, **params):
    est = CPolyClassifier(backbone=tiny_backbone("bert"), n_shared=2, callbacks=[logger], **TINY, **params)
    return est.fit(X, Y, X_val=X[:6], y_val=Y[:6])


def test_csv_logger_writes_a_row_per_epoch_and_the_parameters(tmp_path):
    logger = CSVLogger(tmp_path / "runs" / "cpoly.csv")
    est = _fit(logger)
    est.adapt([("a fresh review, great", "new"), ("a fresh review, awful", "new")], ["pos", "neg"], max_epochs=2)
    with open(tmp_path / "runs" / "cpoly.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["call"] for row in rows] == ["fit"] * 3 + ["adapt"] * 2
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4, 5]  # adapt continues history_
    np.testing.assert_allclose([float(row["loss"]) for row in rows[:3]], est.loss_curve_)
    np.testing.assert_allclose([float(row["validation_score"]) for row in rows[:3]], est.validation_scores_)
    assert rows[3]["validation_score"] == "" and rows[3]["stage"] == "adapt:routing"
    params = json.loads((tmp_path / "runs" / "cpoly.params.json").read_text())
    assert params["n_shared"] == "2" and params["backbone"] == est.backbone and "callbacks" not in params


@pytest.mark.slow
def test_mlflow_logger_records_params_metrics_and_the_model(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="MLflowLogger needs the skillfit[mlflow] extra")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder store: no server, no database
    uri = (tmp_path / "mlruns").as_uri()
    logger = MLflowLogger(tracking_uri=uri, experiment_name="tests", tags={"purpose": "test"})
    est = _fit(logger)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(logger.run_ids_[0])
    assert run.info.status == "FINISHED" and run.data.tags["purpose"] == "test"
    assert run.data.params["n_shared"] == "2" and run.data.params["max_epochs"] == "3"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [metric.step for metric in history] == [1, 2, 3]
    np.testing.assert_allclose([metric.value for metric in history], est.loss_curve_)
    scores = client.get_metric_history(run.info.run_id, "validation_score")
    np.testing.assert_allclose([metric.value for metric in scores], est.validation_scores_)
    assert {"validation/alpha", "learning_rate", "router_learning_rate"} <= set(run.data.metrics)
    saved = {artifact.path for artifact in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/skillfit_config.json", "model/skillfit_model.safetensors"} <= saved
    folder = client.download_artifacts(run.info.run_id, "model", str(tmp_path / "download"))
    np.testing.assert_allclose(CPolyClassifier.from_pretrained(folder).predict_proba(X), est.predict_proba(X), atol=1e-6)


def test_tensorboard_logger_writes_event_files_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoardLogger needs the skillfit[tensorboard] extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    est = _fit(TensorBoardLogger(tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    losses = events.Scalars("loss")
    assert [event.step for event in losses] == [1, 2, 3]
    np.testing.assert_allclose([event.value for event in losses], est.loss_curve_, rtol=1e-6)
    assert {"validation_score", "validation/alpha", "learning_rate"} <= set(events.Tags()["scalars"])
    assert "params/fit/text_summary" in events.Tags()["tensors"]


def test_loggers_survive_clone_and_pickle(tmp_path):
    import pickle

    from sklearn.base import clone

    for logger in (CSVLogger(tmp_path / "a.csv"), MLflowLogger(), TensorBoardLogger(tmp_path / "tb")):
        est = CPolyClassifier(callbacks=[logger])
        assert type(clone(est).callbacks[0]) is type(logger)
        assert type(pickle.loads(pickle.dumps(est)).callbacks[0]) is type(logger)
