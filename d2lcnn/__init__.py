"""d2lcnn: course companion for the classic CNN chapters of Dive into Deep Learning."""

__version__ = "0.1.0"
