"""The version of bncli, at the bottom of the layers so that any of them may record it."""

__version__ = "0.1.0"
