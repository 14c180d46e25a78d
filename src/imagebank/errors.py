"""The project's exception hierarchy.

Every protocol adapter (CLI, HTTP, DIMSE) maps these to its own status codes in one place, so the
pure logic raises meaningful errors without knowing who will report them.
"""

from __future__ import annotations


class ImagebankError(Exception):
    """Base class of every error Imagebank raises on purpose."""


class ConfigError(ImagebankError):
    """The configuration (file or environment) is invalid; the message names the setting."""


class RejectedInstance(ImagebankError):
    """An instance was refused by the ingest pipeline.

    ``reason`` is a short machine-friendly code (e.g. ``missing-attribute``) and ``attribute`` the
    DICOM keyword it concerns, if any. The message never contains patient-identifying values.
    """

    def __init__(self, reason: str, message: str, attribute: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.attribute = attribute

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(ImagebankError):
    """A requested object does not exist."""


class StorageError(ImagebankError):
    """A blob store or database operation failed (out of space, unreachable server...)."""
