"""Deployment: ONNX export (:mod:`ovseg.export.onnx`) and ``torch.export``
(:mod:`ovseg.export.torch_export`) of the tensor seam ``FCCLIP.predict_logits``.

Importing this package is cheap; onnx is imported only when an export runs.
"""

from ovseg.export.onnx import export_onnx
from ovseg.export.torch_export import export_program, load_program

__all__ = ["export_onnx", "export_program", "load_program"]
