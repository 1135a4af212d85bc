"""linewatch: learn good parts from good images, flag defects on the line."""

__version__ = "0.1.0"
