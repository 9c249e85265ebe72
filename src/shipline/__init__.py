"""shipline: run AI agents on real engineering work, one routed ticket at a time."""

__version__ = "0.1.0"
