"""scikit-learn estimators of the skillfit method family."""

from .cpoly import CPolyClassifier, CPolySeq2Seq
from .lora import LoRAClassifier, LoRASeq2Seq
from .mtlora import MTLoRAClassifier, MTLoRASeq2Seq
from .pemt import PEMTClassifier, PEMTSeq2Seq
from .poly import PolyClassifier, PolySeq2Seq

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
]
