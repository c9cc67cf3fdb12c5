"""Prediction without a known task (internal): ``handle_unknown_task``.

``unknown_tasks.py`` (``UnknownTaskMixin``) sorts the rows of a prediction into given,
inferred, averaged and content-routed, and predicts each kind apart;
``task_identifier.py`` (``TaskIdentifier``) infers a row's task from the frozen backbone.
"""
