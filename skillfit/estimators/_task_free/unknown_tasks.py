"""Predicting for rows without a known task: infer the task, route by content, or average.

``handle_unknown_task`` says what a row gets when its task id is missing (texts alone,
None, NaN) or was not seen in ``fit`` (``docs/transfer.md``, "Predicting without a task
id"):

- ``"error"``: a ValueError that says what to pass;
- ``"average"``: the average routing of the fitted tasks, no exclusive skills, any label;
- ``"infer"``: the task identifier (:class:`~.task_identifier.TaskIdentifier`, trained
  by ``fit``) picks a fitted task, whose routing, exclusive skills and labels are used;
  below ``unknown_task_threshold`` the row falls back to ``"average"``;
- ``"route"``: the shared skills are weighed per token by content
  (:mod:`skillfit.skills.content_routing`), no exclusive skills, any label;
- ``"infer_and_route"``: content routing of the shared skills, with the inferred task's
  exclusive skills and labels (fallback: ``"average"``).

Rows with a fitted task id keep it and are predicted apart from the others, so their
outputs are those of a prediction of these rows alone, bit for bit.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import nullcontext
from typing import Any, Callable

import numpy as np
import torch

from ..._warnings import warn_user
from ..._inputs import check_texts_and_optional_tasks, is_text_only
from ...skills import skill_layers
from ...skills.content_routing import ContentRouting
from .._batching import PREDICT_CHUNK_ROWS, evaluation_batches, token_lengths
from .._concurrency import changes_model, reads_model
from .._networks import layer_mean_states
from .._runtime import autocast
from .task_identifier import TaskIdentifier

UNKNOWN_TASK_MODES = ("error", "average", "infer", "route", "infer_and_route")
INFERRING_MODES = ("infer", "infer_and_route")
ROUTING_MODES = ("route", "infer_and_route")
# Each thread's own last prediction report, per estimator (held weakly): see unknown_task_report_.
_THREAD_REPORTS = threading.local()
# How each row of a prediction is handled; rows of each kind are predicted together.
GIVEN, RESOLVED, ROUTED = 0, 1, 2


class UnknownTaskMixin:
    """Task inference, content routing and the prediction of rows without a known task."""

    # ----------------------------------------------------------- parameters
    def _check_unknown_task_params(self) -> None:
        if self.handle_unknown_task in ROUTING_MODES and not self._has_routed_skills():
            raise ValueError(
                f"handle_unknown_task={self.handle_unknown_task!r} weighs shared skills routed by task, which "
                f"{type(self).__name__} does not have with these parameters; use handle_unknown_task='infer' "
                "or 'average' (content routing is for Poly, Poly-S and C-Poly with n_shared >= 1)."
            )

    def _has_routed_skills(self) -> bool:
        """Whether the method's shared skills are routed by task (Poly, Poly-S, C-Poly with shared skills)."""
        return self._skill_config(1).routing == "poly"

    # ------------------------------------------------------- task identifier
    @reads_model
    def predict_task_proba(self, X: Any) -> np.ndarray:
        """Probability of each fitted task for each text, inferred from the text alone.

        The task identifier is a linear discriminant with a shared covariance, shrunk
        as Ledoit and Wolf propose [1]_, and equal priors, on the bare backbone's
        mean-pooled hidden states averaged over its layers (the encoder's for
        encoder-decoders; skills off). ``fit`` trains it when
        ``handle_unknown_task`` is ``"infer"`` or ``"infer_and_route"``;
        :meth:`fit_task_identifier` adds it to a model fitted without.

        Parameters
        ----------
        X : list or Series of str, DataFrame, or (text, task) pairs
            Texts; task ids in ``X`` are ignored.

        Returns
        -------
        ndarray of shape (n_samples, n_tasks)
            Columns in the order of ``tasks_``; rows sum to 1.

        Raises
        ------
        ValueError
            If the model has no task identifier.

        See Also
        --------
        skillfit.PolyClassifier.predict_task : The most probable task of each text.
        skillfit.PolyClassifier.fit_task_identifier : Train the identifier after ``fit``.

        References
        ----------
        .. [1] Ledoit, Wolf. "A well-conditioned estimator for large-dimensional covariance
           matrices." Journal of Multivariate Analysis 88(2), 2004.

        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0,
        ...                      handle_unknown_task="infer").fit(X, y)
        >>> proba = clf.predict_task_proba(["a fine plot", "a free prize"])
        >>> proba.shape  # one column per entry of tasks_
        (2, 2)
        >>> proba.sum(axis=1).round(4)
        array([1., 1.])
        """
        self._check_fitted()
        texts, _, _ = check_texts_and_optional_tasks(X, text_column=self.text_column, task_column=self.task_column)
        return self._task_probabilities(texts)

    @reads_model
    def predict_task(self, X: Any) -> np.ndarray:
        """The most probable fitted task of each text (``unknown_task_threshold`` is not applied).

        The argmax of :meth:`predict_task_proba`: what ``handle_unknown_task="infer"``
        uses for a row without a fitted task id, before the threshold.

        Parameters
        ----------
        X : list or Series of str, DataFrame, or (text, task) pairs
            Texts; task ids in ``X`` are ignored.

        Returns
        -------
        ndarray of shape (n_samples,)
            Entries of ``tasks_``.

        Raises
        ------
        ValueError
            If the model has no task identifier.

        See Also
        --------
        skillfit.PolyClassifier.predict_task_proba : The probability of every fitted task.
        skillfit.PolyClassifier.fit_task_identifier : Train the identifier after ``fit``.


        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0,
        ...                      handle_unknown_task="infer").fit(X, y)
        >>> tasks = clf.predict_task(["a fine plot", "a free prize"])
        >>> tasks.shape
        (2,)
        >>> set(tasks) <= set(clf.tasks_)
        True
        """
        return self.tasks_[np.argmax(self.predict_task_proba(X), axis=1)]

    @changes_model
    def fit_task_identifier(self, X: Any) -> "UnknownTaskMixin":
        """Train the task identifier on ``(text, task)`` pairs of fitted tasks, keeping the skills.

        ``fit`` does this itself when ``handle_unknown_task`` is ``"infer"`` or
        ``"infer_and_route"``; call it to add an identifier to a model fitted without.
        It reads the frozen backbone only, so it costs one forward pass over ``X``.
        The identifier is a linear discriminant with a Ledoit-Wolf (Ledoit et al. 2004) shrunk
        covariance; with it, ``handle_unknown_task`` may be set to ``"infer"``, or to
        ``"infer_and_route"`` for content routing [2]_ with the inferred task's
        exclusive skills and labels.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids, all of them fitted tasks. A fitted task without
            rows is never inferred (with a warning).

        Returns
        -------
        object
            The estimator itself (``self``), with a trained task identifier.

        Raises
        ------
        ValueError
            If ``X`` has task ids that were not fitted (learn them with ``adapt``).

        See Also
        --------
        skillfit.PolyClassifier.predict_task : The most probable task of each text.
        skillfit.PolyClassifier.predict_task_proba : The probability of every fitted task.
        skillfit.PolyClassifier.adapt : Learn new tasks (also added to the identifier).

        References
        ----------
        .. [2] Ostapenko, Su, Ponti, Charlin, Le Roux, Pereira, Caccia, Sordoni. "Towards
           Modular LLMs by Building and Reusing a Library of LoRAs." ICML 2024 (arXiv:2405.11157).

        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> clf.fit_task_identifier(X)
        PolyClassifier(...)
        >>> clf.predict_task_proba(["a fine plot"]).shape
        (1, 2)

        Predictions may now infer the task of texts that come without one:

        >>> clf.set_params(handle_unknown_task="infer").predict(["a fine plot"]).shape
        (1,)
        """
        self._check_fitted()
        texts, tasks = self._validated_inputs(X)
        task_index = self._fitted_task_indices(
            tasks, "fit_task_identifier", "fit_task_identifier() got task id(s) {unknown} that were not fitted; "
            "learn them with adapt() first (which also adds them to the identifier).",
        )
        self._train_task_identifier(texts, task_index)
        return self

    def _train_task_identifier(self, texts: list[str], task_index: np.ndarray) -> None:
        """Fit the identifier of every fitted task on these rows and attach it to the network."""
        absent = sorted(set(range(len(self.tasks_))) - set(task_index.tolist()))
        if absent:
            warn_user(
                f"Tasks {self.tasks_[absent].tolist()[:10]} have no rows to train the task identifier on; it "
                "never infers them.",
                UserWarning,
            )
        features = self._task_features(texts)
        identifier = TaskIdentifier.fitted(features, task_index, len(self.tasks_))
        self.network_.task_identifier = identifier.to(self.device_)

    def _update_task_identifier(self, texts: list[str], task_index: np.ndarray) -> None:
        """Fold ``adapt``'s rows into the identifier, if the model has one (new tasks get their means)."""
        identifier = getattr(self.network_, "task_identifier", None)
        if identifier is not None:
            identifier.update(self._task_features(texts), task_index)

    def _task_probabilities(self, texts: list[str]) -> np.ndarray:
        identifier = getattr(self.network_, "task_identifier", None)
        if identifier is None:
            raise ValueError(
                f"{type(self).__name__} has no task identifier: fit trains one when handle_unknown_task is "
                "'infer' or 'infer_and_route'. Call fit_task_identifier(X) with (text, task) pairs of the "
                "fitted tasks, or refit with handle_unknown_task='infer'."
            )
        return identifier.predict_proba(self._task_features(texts))

    def _task_features(self, texts: list[str]) -> np.ndarray:
        """The bare backbone's mean-pooled states, averaged over its layers (skills off): ``(n, hidden)``, float32.

        The encoder's for encoder-decoders (:func:`~..._networks.layer_mean_states`).
        Batched by length, in chunks of the prediction's size.
        """
        network = self.network_
        network.eval()
        parts = []
        with torch.no_grad(), autocast(self.device_), network.context.bypass():
            for start in range(0, len(texts), PREDICT_CHUNK_ROWS):
                chunk = texts[start:start + PREDICT_CHUNK_ROWS]
                encoded = self._encode(chunk, np.zeros(len(chunk), dtype=np.int64), None)
                features = None
                for rows in evaluation_batches(token_lengths(encoded), encoded["tasks"], self.batch_size):
                    input_ids, attention_mask = self._pad([encoded["input_ids"][i] for i in rows])
                    pooled = layer_mean_states(network.backbone, input_ids, attention_mask).float().cpu().numpy()
                    if features is None:
                        features = np.empty((len(chunk), pooled.shape[1]), dtype=np.float32)
                    features[rows] = pooled
                parts.append(features)
        return np.concatenate(parts)

    # ------------------------------------------------------ routing prototypes
    def _attach_routing_prototypes(self) -> None:
        """Compute the content-routing prototypes of every routed layer from the current skills (others keep none)."""
        for _, layer in skill_layers(self.network_.backbone):
            layer.attach_prototypes()

    def _content_routing(self):
        """The scope in which the routed layers weigh their shared skills by content."""
        layers = [layer for _, layer in skill_layers(self.network_.backbone) if layer.routes_by_content]
        if any(layer.route_prototypes is None for layer in layers):
            self._attach_routing_prototypes()  # a model saved before prototypes existed
        routing = ContentRouting(top_k=self.route_top_k, temperature=self.route_temperature)
        return self.network_.context.content_routed(routing)

    # ------------------------------------------------------------ prediction
    @property
    def unknown_task_report_(self) -> dict[str, Any]:
        """What the last prediction did with its rows, by how each row found its task.

        A dict of counts, out of ``rows``: rows ``given`` a fitted task id,
        ``inferred`` (by the task identifier (Ledoit et al. 2004)), ``fell_back`` (to the average
        routing, below ``unknown_task_threshold``), ``averaged`` and ``routed`` by
        content (Ostapenko et al. 2024); ``fractions`` holds the same as fractions of ``rows``. Each
        ``predict``, ``predict_proba`` or ``score`` replaces it; before the first,
        reading it raises an AttributeError. Each thread reads the report of its own
        last prediction; a thread that has made none reads the last of any thread.

        See Also
        --------
        skillfit.PolyClassifier.predict_task : The task that ``"infer"`` picks for each text.
        skillfit.PolyClassifier.fit_task_identifier : Train the identifier after ``fit``.


        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0,
        ...                      handle_unknown_task="infer").fit(X, y)
        >>> clf.predict([("a fine plot", None), ("free prize", "sms"), ("see you", "sms")]).shape
        (3,)
        >>> report = clf.unknown_task_report_
        >>> report["rows"], report["given"], report["inferred"], report["fell_back"]
        (3, 2, 1, 0)
        >>> round(report["fractions"]["inferred"], 4)
        0.3333
        """
        report = getattr(_THREAD_REPORTS, "by_estimator", {}).get(self) or self.__dict__.get("_prediction_report")
        if not report:
            raise AttributeError(f"{type(self).__name__} has made no prediction yet: unknown_task_report_ is set by predict.")
        return {**report, "fractions": dict(report["fractions"])}

    def _start_prediction_reports(self) -> None:
        """Make the holder that predictions write their report into (``fit``, loading, unpickling).

        Predictions update its contents and never the estimator's attributes, so the
        estimator's state (``__dict__``) is the same before and after ``predict``.
        """
        self.__dict__.setdefault("_prediction_report", {})

    def _record_prediction(self, report: dict[str, Any]) -> None:
        holder = self.__dict__.get("_prediction_report")
        if holder is None:  # an estimator made before reports existed, restored without __setstate__
            holder = self.__dict__.setdefault("_prediction_report", {})
        # The last report of any thread: every report has the same keys, and one dict.update
        # runs under the GIL, so a reader never sees half of one.
        holder.update(report)
        mine = getattr(_THREAD_REPORTS, "by_estimator", None)
        if mine is None:
            mine = _THREAD_REPORTS.by_estimator = weakref.WeakKeyDictionary()
        mine[self] = report

    def _prediction_tasks(self, X: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Texts, each row's task index (-1: average routing) and how each row is handled (GIVEN, RESOLVED, ROUTED).

        Sets ``unknown_task_report_``.
        """
        texts, tasks, has_task = check_texts_and_optional_tasks(
            X, text_column=self.text_column, task_column=self.task_column
        )
        mode = self.handle_unknown_task
        if mode == "error" and not has_task.all():
            raise ValueError(self._missing_tasks_message(X, has_task))
        task_index = np.full(len(texts), -1, dtype=np.int64)
        if has_task.any():
            task_index[has_task] = self._task_indices(tasks[has_task])
        kind = np.full(len(texts), GIVEN, dtype=np.int8)
        rows = np.flatnonzero(task_index < 0)
        report = {"rows": len(texts), "given": len(texts) - len(rows), "inferred": 0, "fell_back": 0,
                  "averaged": 0, "routed": 0}
        if len(rows):
            confident = np.zeros(len(rows), dtype=bool)
            if mode in INFERRING_MODES:
                probabilities = self._task_probabilities([texts[i] for i in rows])
                confident = probabilities.max(axis=1) >= self.unknown_task_threshold
                task_index[rows[confident]] = np.argmax(probabilities[confident], axis=1)
                report["inferred"], report["fell_back"] = int(confident.sum()), int((~confident).sum())
            elif mode == "average":
                report["averaged"] = len(rows)
            routed = np.ones(len(rows), dtype=bool) if mode == "route" else confident & (mode == "infer_and_route")
            kind[rows] = np.where(routed, ROUTED, RESOLVED)
            report["routed"] = int(routed.sum())
        report["fractions"] = {key: report[key] / len(texts) for key in ("given", "inferred", "fell_back", "averaged", "routed")}
        self._record_prediction(report)
        if self.verbose and len(rows):
            print(f"{type(self).__name__}: {len(rows)} of {len(texts)} rows without a fitted task id: "
                  f"{report['inferred']} inferred, {report['fell_back']} fell back to the average routing, "
                  f"{report['averaged']} averaged, {report['routed']} routed by content.")
        return texts, task_index, kind

    def _n_rows(self, X: Any) -> int:
        """How many rows ``X`` holds, in any form prediction accepts (texts alone included)."""
        if hasattr(X, "__len__") and not isinstance(X, (str, bytes)):
            return len(X)
        return len(check_texts_and_optional_tasks(X, text_column=self.text_column, task_column=self.task_column)[0])

    def _missing_tasks_message(self, X: Any, has_task: np.ndarray) -> str:
        route = " 'route' (skills chosen by content)," if self._has_routed_skills() else ""
        fix = f"or set handle_unknown_task='infer' (the task is inferred from each text),{route} or 'average'."
        if is_text_only(X, self.text_column, self.task_column):
            if hasattr(X, "columns"):
                return (f"X has no task column {self.task_column!r} (columns {list(X.columns)}); "
                        f"{type(self).__name__} predicts for (text, task) pairs with handle_unknown_task='error'. "
                        f"Name the column with task_column=, {fix}")
            return (f"X holds texts without task ids (a 1-dimensional {type(X).__name__}); pair each text with its "
                    f"task id (a list of (text, task) pairs or a DataFrame), {fix}")
        missing = np.flatnonzero(~has_task).tolist()
        return f"Task ids are missing (None or NaN) at rows {missing[:10]}; pass every row's task id, {fix}"

    def _predict_in_chunks(self, X: Any, predict_encoded: Callable[[dict[str, Any]], np.ndarray]) -> np.ndarray:
        """``predict_encoded`` over the rows of ``X``, each kind of row (given, resolved, routed) apart."""
        self._check_fitted()
        texts, task_index, kind = self._prediction_tasks(X)
        if (kind == GIVEN).all():
            return self._predict_rows(texts, task_index, predict_encoded)
        predictions = None
        with self._inference():
            for group in (GIVEN, RESOLVED, ROUTED):
                rows = np.flatnonzero(kind == group)
                if not len(rows):
                    continue
                with self._content_routing() if group == ROUTED else nullcontext():
                    part = self._predict_rows([texts[i] for i in rows], task_index[rows], predict_encoded)
                if predictions is None:
                    predictions = np.empty((len(texts),) + part.shape[1:], dtype=part.dtype)
                predictions[rows] = part
        return predictions
