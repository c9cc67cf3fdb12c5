"""scikit-learn estimators of the skillfit method family.

A kind (``classifier.py``, ``seq2seq.py``) times a method (``poly.py``, ``cpoly.py``,
``lora.py``, ``mtlora.py``, ``pemt.py``) over one base (``_base.py``); the hooks they
fill in are declared in ``_hooks.py``, the training loop is ``_training/loop.py``.
``docs/architecture.md`` maps every module and walks through adding a method.
"""

from ._concurrency import ConcurrentUseError
from .cpoly import CPolyClassifier, CPolySeq2Seq
from .lora import LoRAClassifier, LoRASeq2Seq
from .mtlora import MTLoRAClassifier, MTLoRASeq2Seq
from .pemt import PEMTClassifier, PEMTSeq2Seq
from .poly import PolyClassifier, PolySeq2Seq

__all__ = [
    "ConcurrentUseError",
    "CPolyClassifier",
    "CPolySeq2Seq",
    "LoRAClassifier",
    "LoRASeq2Seq",
    "MTLoRAClassifier",
    "MTLoRASeq2Seq",
    "PEMTClassifier",
    "PEMTSeq2Seq",
    "PolyClassifier",
    "PolySeq2Seq",
]
