"""The training runtime (internal): the loop, its state, callbacks, optimizer, checkpoints and processes.

``loop.py`` trains (``TrainingLoop``: ``fit_loop -> run_epoch -> train_step``) and knows
nothing of scikit-learn or of the methods; ``run_context.py`` wraps one training call of an
estimator (``TrainingRun``). The rest serve the loop: ``loop_state.py`` (position,
snapshots, early stopping's tracker), ``loop_callbacks.py`` and ``progress.py`` (its own
callbacks), ``interrupts.py`` (Ctrl-C), ``optimizer.py`` (AdamW with per-task rows and the
schedules), ``checkpoint.py`` (resumable fits), ``distributed.py`` (data-parallel fits) and
``validation_split.py`` (early stopping's hold-out). Nothing here imports an estimator.
"""
