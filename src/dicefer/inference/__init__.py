"""Inference on photos and video: face detection, preprocessing as in training, PyTorch or ONNX."""
import os

# FFmpeg's own messages about a damaged video ("moov atom not found") would reach the user's terminal
# beside dicefer's one-line warning. OpenCV reads this when its first video is opened or written,
# so it is set when the inference package is imported, before any video use.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from dicefer.inference.recognizer import ExpressionRecognizer, Face  # noqa: E402

__all__ = ["ExpressionRecognizer", "Face"]
