"""The refusal raised by every upload check."""

from __future__ import annotations

from bastion.errors import ServiceError


class UploadRejected(ServiceError):
    """An upload refused with a status (400 unless said) and the message twine shows."""
