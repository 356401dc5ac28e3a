"""The framework's version, the one source of it (read by setup.py too)."""

__version__ = "0.1.0"
