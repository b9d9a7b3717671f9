"""Backbone, neural object volumes with the background bank, and the NOVUM module."""

from .backbone import FeatureBackbone
from .neural_volumes import NeuralVolumes

__all__ = ["FeatureBackbone", "NeuralVolumes"]
