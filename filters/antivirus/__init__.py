"""The ``antivirus`` built-in filter: ClamAV's clamd over INSTREAM (see filter.py)."""

from spamgate.filters.antivirus.filter import AntivirusFilter, AntivirusOptions

__all__ = ["AntivirusFilter", "AntivirusOptions"]
