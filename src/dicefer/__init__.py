"""DICE-FER: facial expression recognition with an identity-free expression code."""
__version__ = "0.1.0"
