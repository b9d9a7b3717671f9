"""Standard image classifiers trained on the same data, the baselines of the robustness benchmark."""

from .model import BaselineClassifier, build_classifier, load_baseline
from .trainer import BaselineTrainer

__all__ = ["BaselineClassifier", "BaselineTrainer", "build_classifier", "load_baseline"]
