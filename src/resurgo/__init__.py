"""resurgo: automated system recovery for Linux."""

__version__ = "0.1.0"
