"""Export to TFLite: one path for every tfpriors layer family.

Example:

>>> report = tfpriors.export.to_tflite(model, "digits.tflite", verify_data=x_test)
>>> print(report)
"""

from tfpriors.export.inference import ExportError, inference_model
from tfpriors.export.shrink import ShrinkSummary, shrink
from tfpriors.export.tflite import ExportReport, to_tflite

__all__ = ["ExportError", "ExportReport", "ShrinkSummary", "inference_model", "shrink", "to_tflite"]
