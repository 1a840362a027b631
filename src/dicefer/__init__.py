"""DICE-FER: facial expression recognition with an identity-free expression code."""
__version__ = "0.1.0"
__all__ = ["ExpressionRecognizer", "Face"]


def __getattr__(name: str):
    # Imported on first use: `import dicefer` (and the CLI's --help) stays free of torch and OpenCV.
    if name in __all__:
        from dicefer import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'dicefer' has no attribute {name!r}")
