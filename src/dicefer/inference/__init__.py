"""Inference on photos and video: face detection, preprocessing as in training, PyTorch or ONNX."""
from .recognizer import ExpressionRecognizer, Face

__all__ = ["ExpressionRecognizer", "Face"]
