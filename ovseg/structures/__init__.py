"""Result and contract types shared by every layer above: predictions, the encoded text
classifier and the backbone's per-output shape. Plain dataclasses; no model code."""

from ovseg.structures.classes import ClassList
from ovseg.structures.prediction import Instances, Prediction
from ovseg.structures.shape_spec import ShapeSpec
from ovseg.structures.text_classifier import TextClassifier

__all__ = ["ClassList", "Instances", "Prediction", "ShapeSpec", "TextClassifier"]
