"""A mail policy gateway: an SMTP relay hop that enforces a department's acceptable-use policy."""

__version__ = "0.1.0"
