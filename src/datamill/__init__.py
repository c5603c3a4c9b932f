"""datamill: a self-hosted data-processing service."""

__version__ = "0.1.0"
