"""spamgate: a transparent anti-spam SMTP proxy (the engine)."""

__version__ = "0.1.0"
