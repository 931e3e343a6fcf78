"""Heptapod: language modeling on visual signals via next-2D-distribution prediction."""

__version__ = "0.1.0"
