"""Why an object was not released."""

from __future__ import annotations

from imagebank.errors import ImagebankError


class Quarantined(ImagebankError):
    """The object cannot be made safe (or could not be read): it is kept out of the output.

    ``reason`` is a short machine-friendly code (``pixel-risk``, ``unreadable``, ``leak``...), the message
    says what to do; neither ever contains a patient-identifying value.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0])
