"""skillfit: multi-task parameter-efficient fine-tuning of transformers, the scikit-learn way.

Estimators take ``X`` as ``(text, task)`` pairs and learn all tasks at once with small
low-rank "skills" in a frozen backbone; see ``docs/`` and ``DESIGN.md``.
"""

from .estimators import (
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

__version__ = "0.1.0"

__all__ = [
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
