"""scikit-learn estimators of the skillfit method family."""

from .cpoly import CPolyClassifier
from .lora import LoRAClassifier
from .mtlora import MTLoRAClassifier
from .pemt import PEMTClassifier
from .poly import PolyClassifier

__all__ = ["CPolyClassifier", "LoRAClassifier", "MTLoRAClassifier", "PEMTClassifier", "PolyClassifier"]
