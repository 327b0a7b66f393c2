"""The error every service raises for a request it refuses."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal with the HTTP status and the message the user sees (twine prints it as is)."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class NotFound(ServiceError):
    status = 404


class Forbidden(ServiceError):
    status = 403


class Conflict(ServiceError):
    status = 409
