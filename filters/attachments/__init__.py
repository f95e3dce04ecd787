"""The ``attachments`` built-in filter: a dangerous-attachment policy, no external service."""

from spamgate.filters.attachments.filter import AttachmentsFilter, AttachmentsOptions

__all__ = ["AttachmentsFilter", "AttachmentsOptions"]
