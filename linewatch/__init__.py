"""linewatch: learn good parts from good images, flag defects on the line."""

from linewatch.limits import limit_opencv

__version__ = "0.1.0"

limit_opencv()
