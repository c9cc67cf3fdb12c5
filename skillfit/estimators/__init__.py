"""scikit-learn estimators of the skillfit method family."""

from .cpoly import CPolyClassifier
from .lora import LoRAClassifier
from .poly import PolyClassifier

__all__ = ["CPolyClassifier", "LoRAClassifier", "PolyClassifier"]
