"""chemspec: declarative, reproducible neural-scaling studies of deep chemical models."""

__version__ = "0.1.0"
