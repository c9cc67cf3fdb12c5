"""Multi-task text classification over a skilled backbone."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin

from .._inputs import check_labels
from .._validation import Options
from ..backbones import Backbone
from ..skills import SkillConfig
from ._base import SkillEstimatorBase
from ._concurrency import reads_model
from ._networks import POOLINGS, SkilledClassifierNetwork
from ._params import estimator_parameters, parameter
from ._runtime import autocast


@estimator_parameters
class SkillClassifierBase(ClassifierMixin, SkillEstimatorBase):
    """Classifier side of the family: a union-label head masked per task.

    ``predict_proba`` has one column per entry of ``classes_``; a task's row is zero
    outside the labels that task was trained with.
    """

    pooling: str = parameter("auto", Options("auto", *POOLINGS))

    _network_class = SkilledClassifierNetwork

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.non_deterministic = self.random_state is None
        return tags

    # ------------------------------------------------------------------ fit hooks
    def _check_targets(self, y: Any, n_samples: int) -> np.ndarray:
        labels = check_labels(y, n_samples)
        self.classes_, label_index = np.unique(labels, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class: {self.classes_.tolist()}."
            )
        return label_index

    def _build_network(
        self, backbone: Backbone, skill_config: SkillConfig, targets: np.ndarray, task_index: np.ndarray
    ) -> SkilledClassifierNetwork:
        label_mask = torch.zeros(len(self.tasks_), len(self.classes_), dtype=torch.bool)
        label_mask[torch.as_tensor(task_index), torch.as_tensor(targets)] = True
        descriptions = self._initial_task_descriptions(backbone)
        context = self._inject(backbone, skill_config)
        pooling = self.pooling
        if pooling == "auto":
            pooling = "last" if backbone.decoder_only else "mean"
        self.pooling_ = pooling
        return SkilledClassifierNetwork(
            backbone.model, context, backbone.config.hidden_size, label_mask, pooling, descriptions
        )

    def _make_batch(self, indices: np.ndarray, encoded: dict[str, Any]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = self._pad([encoded["input_ids"][i] for i in indices])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "tasks": torch.as_tensor(encoded["tasks"][indices], dtype=torch.long),
        }
        if encoded.get("targets") is not None:
            batch["labels"] = torch.as_tensor(encoded["targets"][indices], dtype=torch.long).to(self.device_)
        return batch

    def _task_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.network_(batch["input_ids"], batch["attention_mask"], batch["tasks"])
        return F.cross_entropy(logits, batch["labels"])

    # ------------------------------------------------------------ validation hooks
    def _label_columns(self, labels: np.ndarray, unknown_message: str) -> np.ndarray:
        """Each label's column in ``classes_``; a ValueError ``unknown_message`` (with ``{unknown}``) for others."""
        column = {label: j for j, label in enumerate(self.classes_.tolist())}
        unknown = sorted({label for label in labels.tolist() if label not in column}, key=str)
        if unknown:
            raise ValueError(unknown_message.format(unknown=unknown[:10]))
        return np.asarray([column[label] for label in labels.tolist()], dtype=np.int64)

    def _check_validation_targets(self, y_val: Any, n_samples: int) -> np.ndarray:
        labels = check_labels(y_val, n_samples, ("X_val", "y_val"))
        return self._label_columns(labels, "y_val has label(s) {unknown} that y does not have; validate only on trained labels.")

    def _check_validation_pairs(
        self, task_index: np.ndarray, targets: np.ndarray, val_index: np.ndarray, val_targets: np.ndarray
    ) -> None:
        trained = set(zip(task_index.tolist(), targets.tolist()))
        row = next((i for i, pair in enumerate(zip(val_index.tolist(), val_targets.tolist())) if pair not in trained), None)
        if row is not None:
            raise ValueError(
                f"y_val[{row}] gives task {self.tasks_[val_index[row]]!r} the label {self.classes_[val_targets[row]]!r}, "
                "which y never gives that task; a task predicts only the labels it is trained with. Drop such "
                "rows from the validation data, or add examples of them to X and y."
            )

    def _warm_start_targets(self, y: Any, n_samples: int, task_index: np.ndarray) -> np.ndarray:
        labels = check_labels(y, n_samples)
        targets = self._label_columns(
            labels, "warm_start=True continues the fitted labels, but y has new label(s) {unknown}; learn them "
            "with adapt(mode='all'), or set warm_start=False to fit from scratch.",
        )
        allowed = self.network_.label_mask.cpu().numpy()[task_index, targets]
        if not allowed.all():
            row = int(np.flatnonzero(~allowed)[0])
            raise ValueError(
                f"warm_start=True keeps each task's labels, but row {row} gives task {self.tasks_[task_index[row]]!r} "
                f"the label {labels[row]!r}, which it did not have; use adapt(mode='all') or warm_start=False."
            )
        return targets

    def _partial_fit_targets(self, y: Any, n_samples: int, classes: Any, task_index: np.ndarray | None) -> np.ndarray:
        labels = check_labels(y, n_samples)
        if task_index is None and classes is None:
            return self._check_targets(y, n_samples)
        given = None if classes is None else np.unique(np.asarray(list(classes) if not hasattr(classes, "__array__") else classes))
        if task_index is None:
            if len(given) < 2:
                raise ValueError(f"classes must hold at least 2 labels; got {given.tolist()}.")
            self.classes_ = given
        elif given is not None and not np.array_equal(given, self.classes_):
            raise ValueError(f"classes={given.tolist()[:10]} differs from the classes of the first partial_fit call "
                             f"({self.classes_.tolist()[:10]}); pass the same classes, or call fit() to start over.")
        return self._label_columns(
            labels, "y has label(s) {unknown} that are not in classes"
            + (" given at the first partial_fit call" if task_index is not None else "")
            + "; pass every label in classes= at the first call, or learn new ones with adapt(mode='all').",
        )

    def _allow_label_pairs(self, task_index: np.ndarray, targets: np.ndarray) -> None:
        mask = self.network_.label_mask.clone()
        mask[torch.as_tensor(task_index, device=mask.device), torch.as_tensor(targets, device=mask.device)] = True
        self.network_.label_mask = mask

    def _stratification_keys(self, task_index: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return task_index * len(self.classes_) + targets

    def _predict_encoded(self, encoded: dict[str, Any]) -> np.ndarray:
        return np.argmax(self._predict_proba_encoded(encoded), axis=1)

    def _prediction_score(self, targets: np.ndarray, predictions: np.ndarray) -> float:
        return float(np.mean(np.asarray(targets) == np.asarray(predictions)))

    # ---------------------------------------------------------------- adapt hooks
    def _check_adapt_targets(self, y: Any, n_samples: int) -> np.ndarray:
        labels = check_labels(y, n_samples)
        is_bool = lambda values: values.dtype == bool  # noqa: E731
        if is_bool(labels) != is_bool(self.classes_):
            raise TypeError(
                f"{type(self).__name__} was fitted with {self.classes_.dtype} labels; adapt() got {labels.dtype} "
                "labels, which numpy would merge with them (True == 1). Pass labels of the same type as classes_."
            )
        if (labels.dtype == object) != (self.classes_.dtype == object):
            kind = lambda labels: "string" if labels.dtype == object else "numeric"  # noqa: E731
            raise TypeError(
                f"{type(self).__name__} was fitted with {kind(self.classes_)} labels; adapt() got {kind(labels)} "
                "labels. Pass labels of the same type as classes_."
            )
        return labels

    def _add_task_outputs(
        self, labels: np.ndarray, task_index: np.ndarray, n_old_tasks: int
    ) -> tuple[np.ndarray, list[torch.nn.Parameter]]:
        """Extend ``classes_`` with new labels (a new head block) and the label mask with new tasks."""
        head = self.network_.head
        old_classes = self.classes_
        block_labels = np.empty(len(old_classes), dtype=object)
        block_labels[head.label_order.cpu().numpy()] = old_classes.tolist()
        new_labels = [label for label in np.unique(labels).tolist() if label not in set(old_classes.tolist())]
        self.classes_ = np.unique(np.concatenate([old_classes, np.asarray(new_labels, dtype=old_classes.dtype)]))
        block_order = block_labels.tolist() + new_labels
        position = {label: i for i, label in enumerate(block_order)}
        label_order = torch.as_tensor([position[label] for label in self.classes_.tolist()])
        if new_labels:
            new_parameters = list(head.add_block(len(new_labels), label_order).parameters())
        else:
            new_parameters = []
            head.label_order = label_order.to(head.label_order.device)

        column_of = {label: j for j, label in enumerate(self.classes_.tolist())}
        old_mask = self.network_.label_mask.cpu()
        mask = torch.zeros(len(self.tasks_), len(self.classes_), dtype=torch.bool)
        old_columns = torch.as_tensor([column_of[label] for label in old_classes.tolist()])
        mask[:n_old_tasks, old_columns] = old_mask
        label_index = np.asarray([column_of[label] for label in labels.tolist()])
        mask[torch.as_tensor(task_index), torch.as_tensor(label_index)] = True
        self.network_.label_mask = mask.to(self.network_.label_mask.device)
        return label_index, new_parameters

    # ---------------------------------------------------------------- predict
    @reads_model
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Each row's softmax runs over the labels its task was trained with; the other
        columns are exactly zero, so adding labels with ``adapt`` in the ``"routing"``
        or ``"average"`` mode leaves the fitted tasks' probabilities as they were. Rows
        resolved without a task (``"average"``, ``"route"``) may get any label.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids. With ``handle_unknown_task`` other than
            ``"error"``, task ids may be missing or unseen (``X`` may then be texts
            alone); ``unknown_task_report_`` tells what became of such rows.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Zero outside the labels each row's task was trained with (rows averaged or
            routed by content have every label).

        See Also
        --------
        skillfit.PolyClassifier.predict : The most probable label of each row.
        skillfit.PolyClassifier.predict_log_proba : The log of these probabilities.

        References
        ----------
        .. [1] Buitinck et al. "API design for machine learning software: experiences from
           the scikit-learn project." ECML PKDD Workshop 2013 (arXiv:1309.0238).

        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> clf.classes_
        array(['ham', 'neg', 'pos', 'spam'], dtype=object)
        >>> proba = clf.predict_proba(X)
        >>> proba.shape
        (4, 4)
        >>> proba.sum(axis=1).round(4)
        array([1., 1., 1., 1.])
        >>> proba[0] > 0  # a movie review can only be "neg" or "pos"
        array([False,  True,  True, False])
        """
        return self._predict_in_chunks(X, self._predict_proba_encoded)

    def _predict_proba_encoded(self, encoded: dict[str, Any]) -> np.ndarray:
        probabilities = np.zeros((len(encoded["input_ids"]), len(self.classes_)), dtype=np.float64)
        self.network_.eval()
        with torch.no_grad(), autocast(self.device_), self._inference():
            for indices in self._iter_eval_batches(encoded):
                batch = self._make_batch(indices, encoded)
                logits = self.network_(batch["input_ids"], batch["attention_mask"], batch["tasks"]).double().cpu().numpy()
                batch_tasks = encoded["tasks"][indices]
                for task in np.unique(batch_tasks):
                    rows = batch_tasks == task
                    # The network's label mask sets logits outside the task's labels to -inf: the
                    # softmax runs over the task's own labels only, so it does not depend on how many
                    # other labels exist (adapt can add some), and the others get exactly zero.
                    columns = np.flatnonzero(~np.isneginf(logits[rows][0]))
                    task_logits = logits[rows][:, columns]
                    exp = np.exp(task_logits - task_logits.max(axis=1, keepdims=True))
                    probabilities[np.ix_(indices[rows], columns)] = exp / exp.sum(axis=1, keepdims=True)
        return probabilities

    @reads_model
    def predict(self, X: Any) -> np.ndarray:
        """The most probable label of each row among its task's labels.

        A row is never given a label that its task was not trained with: the argmax
        runs over :meth:`predict_proba`, which is zero outside them.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids. With ``handle_unknown_task`` other than
            ``"error"``, task ids may be missing or unseen (``X`` may then be texts
            alone); ``unknown_task_report_`` tells what became of such rows.

        Returns
        -------
        ndarray of shape (n_samples,)
            Equal to ``classes_[argmax(predict_proba(X))]``.

        See Also
        --------
        skillfit.PolyClassifier.predict_proba : The probability of every label.
        skillfit.PolyClassifier.score : The accuracy of these predictions.


        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> labels = clf.predict(X)
        >>> labels.shape
        (4,)
        >>> set(labels[:2]) <= {"neg", "pos"}  # each row gets a label of its own task
        True
        """
        probabilities = self.predict_proba(X)
        return self.classes_[np.argmax(probabilities, axis=1)]

    @reads_model
    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy of :meth:`predict` on ``(X, y)``, optionally weighted by ``sample_weight``.

        The fraction of rows whose predicted label equals ``y``, pooled over all rows
        whatever their task (not a mean of per-task accuracies): with weights,
        ``np.average(predict(X) == y, weights=sample_weight)``.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids. With ``handle_unknown_task`` other than
            ``"error"``, task ids may be missing or unseen (``X`` may then be texts
            alone); ``unknown_task_report_`` tells what became of such rows.
        y : array-like of shape (n_samples,)
            True labels, of the same type (string or numeric) as ``classes_``.
        sample_weight : array-like of shape (n_samples,), optional
            Weight of each row; equal weights by default.

        Returns
        -------
        float
            Accuracy, in [0, 1].

        Raises
        ------
        TypeError
            If ``y`` holds strings and ``classes_`` numbers, or the reverse.
        ValueError
            If ``sample_weight`` does not have one weight per row of ``X``.

        See Also
        --------
        skillfit.PolyClassifier.predict : The predictions that are scored.


        Examples
        --------
        >>> import numpy as np
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> accuracy = clf.score(X, y)
        >>> 0.0 <= accuracy <= 1.0
        True
        >>> bool(accuracy == np.mean(clf.predict(X) == np.asarray(y)))
        True
        >>> movies_only = clf.score(X, y, sample_weight=[1, 1, 0, 0])  # the first task's rows only
        >>> bool(movies_only == np.mean(clf.predict(X[:2]) == np.asarray(y[:2])))
        True
        """
        self._check_fitted()
        n_samples = self._n_rows(X)
        labels = check_labels(y, n_samples)
        if (labels.dtype == object) != (self.classes_.dtype == object):
            kind = lambda values: "string" if values.dtype == object else "numeric"  # noqa: E731
            raise TypeError(
                f"{type(self).__name__} was fitted with {kind(self.classes_)} labels; score() got {kind(labels)} "
                "labels. Pass labels of the same type as classes_."
            )
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=float)
            if sample_weight.shape != (n_samples,):
                raise ValueError(f"sample_weight has shape {sample_weight.shape}; score() needs one weight per row of X ({n_samples}).")
        return float(np.average(self.predict(X) == labels, weights=sample_weight))

    @reads_model
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`; ``-inf`` outside each row's task labels.

        The labels a row's task was not trained with have probability exactly zero,
        so their log is ``-inf`` (without a divide-by-zero warning).

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids. With ``handle_unknown_task`` other than
            ``"error"``, task ids may be missing or unseen (``X`` may then be texts
            alone); ``unknown_task_report_`` tells what became of such rows.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Log-probabilities, columns in the order of ``classes_``.

        See Also
        --------
        skillfit.PolyClassifier.predict_proba : The probabilities themselves.


        Examples
        --------
        >>> import numpy as np
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> log_proba = clf.predict_log_proba(X)
        >>> log_proba.shape
        (4, 4)
        >>> np.isneginf(log_proba[0])  # "ham" and "spam" are not labels of the movie task
        array([ True, False, False,  True])
        >>> bool(np.allclose(np.exp(log_proba), clf.predict_proba(X)))
        True
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))
