"""skillfit: multi-task parameter-efficient fine-tuning of transformers, the scikit-learn way.

Estimators take ``X`` as ``(text, task)`` pairs and learn all tasks at once with small
low-rank "skills" in a frozen backbone; see ``docs/``: ``docs/methods.md`` for the
methods and their math, ``docs/architecture.md`` for the layers.
"""

from .estimators import (
    ConcurrentUseError,
    CPolyClassifier,
    CPolySeq2Seq,
    LoRAClassifier,
    LoRASeq2Seq,
    MTLoRAClassifier,
    MTLoRASeq2Seq,
    PEMTClassifier,
    PEMTSeq2Seq,
    PolyClassifier,
    PolySeq2Seq,
)

from ._version import __version__

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
    "__version__",
]
