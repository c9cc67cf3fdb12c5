"""Persistence (internal): folders, pickles, peft export and model cards.

``saving.py`` is the estimator's side (``PersistenceMixin``: ``save_pretrained``,
``from_pretrained``, ``export_peft``, pickling) and the only module here that knows
estimators; ``folder_format.py`` (typed JSON, network payloads, hashes),
``folder_checks.py`` (clear errors for damaged folders), ``peft_export.py`` and
``model_card.py`` take networks and dicts.
"""
