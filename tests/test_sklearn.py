"""The scikit-learn contract: check_estimator, clone, params, model selection, pipelines."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from _tiny import tiny_backbone
from skillfit import CPolyClassifier, LoRAClassifier, MTLoRAClassifier, PEMTClassifier, PolyClassifier

NUMERIC_X = "scikit-learn feeds numeric feature arrays; skillfit estimators take (text, task) pairs"
# Checks that need numeric features: they apply to neither the estimators nor the
# text adapter below.
NUMERIC_ONLY = {
    "check_n_features_in": "X holds (text, task) pairs, not numeric features: there is no n_features_in_",
    "check_n_features_in_after_fitting": "X holds (text, task) pairs, not numeric features: there is no n_features_in_",
    "check_estimators_nan_inf": "NaN/inf are numeric-feature concerns; texts are validated as strings",
    "check_estimators_empty_data_messages": "expects a message about 0 numeric features",
    "check_dtype_object": "object arrays of numbers are not (text, task) pairs",
    "check_estimators_partial_fit_n_features": "texts have no feature count for partial_fit to keep",
}
# Checks that fail only because their X is numeric; the adapter runs them on our code.
NEEDS_TEXT = [
    "check_classifier_data_not_an_array",
    "check_classifiers_classes",
    "check_classifiers_one_label",
    "check_classifiers_regression_target",
    "check_classifiers_train",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_requires_y_none",
    "check_supervised_y_2d",
]


def _tiny(estimator):
    return estimator.set_params(backbone=tiny_backbone("bert"), max_epochs=1, batch_size=16, rank=2, random_state=0)


def _expected_failures(estimator):
    if isinstance(estimator, NumericRowsAsText):
        return {
            **NUMERIC_ONLY,
            "check_classifiers_train": "blobs written as words are not separable enough for a 3-epoch tiny model",
            "check_classifier_data_not_an_array": "the adapter cannot tell this check's wrapped pairs from features",
            "check_methods_sample_order_invariance": (
                "agrees to ~1e-7 relative, not bit for bit: batches are padded to their longest text and "
                "BLAS rounding depends on shapes (test_predictions_do_not_depend_on_batch_composition)"
            ),
        }
    return {**NUMERIC_ONLY, **{name: NUMERIC_X for name in NEEDS_TEXT}}


def _numeric_rows_as_text(X):
    """Write each numeric row as words of the tiny vocabulary, all in one task."""
    if hasattr(X, "columns"):
        return X
    array = np.asarray(X)
    if array.dtype == object or array.ndim != 2:
        return X
    return [(" ".join(f"w{int(abs(value) * 7) % 40}" for value in row), "t") for row in array]


class NumericRowsAsText(CPolyClassifier):
    """Test adapter: lets scikit-learn's numeric-data checks exercise CPolyClassifier's code."""

    def fit(self, X, y):
        return super().fit(_numeric_rows_as_text(X), y)

    def partial_fit(self, X, y, classes=None):
        return super().partial_fit(_numeric_rows_as_text(X), y, classes=classes)

    def predict_proba(self, X):
        return super().predict_proba(_numeric_rows_as_text(X))


@pytest.mark.slow  # scikit-learn's ~45 checks per estimator, each a fit
@parametrize_with_checks(
    [
        _tiny(PolyClassifier(n_skills=2)),
        _tiny(CPolyClassifier(n_shared=2, n_exclusive=1)),
        _tiny(LoRAClassifier(sharing="private")),
        _tiny(MTLoRAClassifier(n_task_layers=1)),
        _tiny(PEMTClassifier()),
        _tiny(NumericRowsAsText(n_shared=2, n_exclusive=1, learning_rate=1e-2)).set_params(max_epochs=3),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_clone_and_params_round_trip():
    clf = CPolyClassifier(n_shared=3, n_exclusive=2, rank=4, target_modules=["query"], random_state=7)
    cloned = clone(clf)
    assert cloned.get_params() == clf.get_params()
    cloned.set_params(n_shared=5, rank=2)
    assert (cloned.n_shared, cloned.rank, clf.n_shared) == (5, 2, 3)
    assert {"n_shared", "n_exclusive", "n_splits", "combine", "rank", "alpha", "backbone"} <= set(clf.get_params())


@pytest.mark.slow
def test_grid_search_over_skill_counts_and_rank(tiny_kwargs, multitask):
    X, y = multitask
    grid = GridSearchCV(
        CPolyClassifier(**{**tiny_kwargs, "max_epochs": 1}),
        {"n_shared": [1, 2], "n_exclusive": [0, 1], "rank": [2, 4]},
        cv=2,
    )
    grid.fit(np.asarray(X, dtype=object), y)
    assert len(grid.cv_results_["params"]) == 8
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_estimator_.n_iter_ == 1
    assert grid.predict(X[:3]).shape == (3,)


@pytest.mark.slow
def test_cross_val_score_and_pipeline(tiny_kwargs, multitask):
    X, y = multitask
    X = np.asarray(X, dtype=object)
    scores = cross_val_score(PolyClassifier(n_skills=2, **tiny_kwargs), X, y, cv=2)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))

    def lowercase_texts(pairs):
        return [(text.lower(), task) for text, task in pairs]

    pipeline = make_pipeline(FunctionTransformer(lowercase_texts), LoRAClassifier(**tiny_kwargs))
    pipeline.fit(X, y)
    assert pipeline.score(X, y) > 0.5
    shouted = [(text.upper(), task) for text, task in X]
    np.testing.assert_array_equal(pipeline.predict(shouted), pipeline.predict(X))
