"""Goalkeeper: finds dangerous services cloud customers expose, and tells them how to close them."""

__version__ = "0.1.0"
