"""What a training loop prints: the tqdm bar of each epoch and its summary line."""

from __future__ import annotations

import sys
from typing import Any

from .loop_callbacks import LoopCallback


class ProgressPrinter(LoopCallback):
    """The loop's own callback (rank 0 only): the tqdm bar of each epoch (``verbose=2``) and its summary line (``verbose>=1``)."""

    def __init__(self, loop: Any) -> None:
        super().__init__(loop)
        self.bar = None

    def on_epoch_begin(self, state) -> None:
        if self.loop.settings.verbose >= 2:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.n_steps, initial=state.step, desc=f"epoch {state.epoch}/{state.n_epochs}",
                            file=sys.stderr)

    def on_batch_end(self, state) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{state.epoch_loss:.4f}")

    def on_epoch_end(self, state) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        shown = f"  validation {state.validation_score:.4f}" if state.validation_score is not None else ""
        self.loop._say(f"epoch {state.epoch}/{state.n_epochs}  loss {state.loss:.4f}{shown}  ({state.record['time']:.1f}s)")
