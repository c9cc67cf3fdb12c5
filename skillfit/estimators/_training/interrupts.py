"""Ctrl-C during training: the one place it is handled (put back the last good weights, then warn)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from ..._warnings import warn_user
from .loop import TrainingLoop


@contextmanager
def interruptible(
    loop: TrainingLoop, action: str, *, needs_an_epoch: bool, kept_note: str = "",
    resumable_from: str | None = None,
) -> Iterator[None]:
    """The one place Ctrl-C is handled: put back the loop's last good weights, then warn.

    Parameters
    ----------
    loop : TrainingLoop
        The loop whose :attr:`~TrainingLoop.kept` weights are put back.
    action : str
        What was interrupted, e.g. ``"CPolyClassifier.fit"``.
    needs_an_epoch : bool
        Re-raise the KeyboardInterrupt when no epoch completed (``fit`` then leaves
        the estimator as it was before).
    kept_note : str
        Appended to the warning, e.g. that the fitted tasks are unchanged.
    resumable_from : str, optional
        A checkpoint file that holds the progress of a call that continues a fitted
        model (a warm fit, ``adapt``): the interrupt is then raised again with a note
        naming it, and the caller puts the estimator back as it was, so that the same
        call, made again, resumes from the checkpoint.

    A Ctrl-C outside a running loop (before the first, between PEMT's stages) finds no
    weights to keep and is re-raised.
    """
    try:
        yield
    except KeyboardInterrupt as interrupt:
        if resumable_from is not None and os.path.exists(resumable_from):
            interrupt.add_note(
                f"{action} was interrupted; the estimator is as it was before the call, and the checkpoint "
                f"{resumable_from!r} keeps the progress: the same call resumes from it."
            )
            raise
        if loop.kept is None:
            raise
        kept = loop.restore_kept()
        if needs_an_epoch and not loop.history:
            raise
        epochs = f" after {len(loop.history)} epoch(s)" if needs_an_epoch else ""
        warn_user(
            f"{action} was interrupted{epochs}; it keeps the weights of {kept}{kept_note}",
            UserWarning,
        )
