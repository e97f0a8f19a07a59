"""The version every run records (tag ``tlcore_version``)."""

__version__ = "0.1.0"
