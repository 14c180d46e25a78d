"""DIMSE command sets (PS3.7 6.3.1, Annex E) encoded without pydicom's generic writer.

A command set is a handful of group 0000 elements, always in implicit VR little endian. pynetdicom encodes
every outgoing one twice with pydicom's ``write_dataset`` (once to compute Command Group Length, once to
send it); per C-STORE that cost about as much as indexing the instance. :func:`encode_command_set` writes the
element types command sets use (UL, US, UI, AE, CS, LO, SH) directly, byte for byte as pydicom would
(tested against it on the commands the listener sends); anything else still goes to pydicom.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement

_NUMBERS = {"UL": "<L", "US": "<H"}
_STRINGS = {"UI": b"\x00", "AE": b" ", "CS": b" ", "LO": b" ", "SH": b" "}  # PS3.5 6.2: padding to even length


def encode_command_set(ds: Dataset) -> bytes | None:
    """Implicit VR little endian encoding of a command set, or None when pydicom must encode it."""
    out = []
    for tag in sorted(ds._dict):
        elem = ds._dict[tag]
        if tag >> 16 or not isinstance(elem, DataElement):
            return None
        vr, value = elem.VR, elem.value
        values = list(value) if isinstance(value, (list, tuple)) else [] if value is None or value == "" else [value]
        if vr in _NUMBERS:
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                return None
            data = b"".join(struct.pack(_NUMBERS[vr], v) for v in values)
        elif vr in _STRINGS:
            if not all(isinstance(v, str) and v.isascii() for v in values):
                return None
            data = "\\".join(values).encode("ascii")
            if len(data) % 2:
                data += _STRINGS[vr]
        else:
            return None
        out.append(struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(data)) + data)
    return b"".join(out)


def speed_up_pynetdicom() -> None:
    """Route pynetdicom's command-set encoding (``pynetdicom.dimse_messages.encode``, which encodes nothing
    but command sets) through :func:`encode_command_set`. Process-wide and idempotent."""
    import pynetdicom.dimse_messages as messages

    if getattr(messages.encode, "imagebank_fast_path", False):
        return
    pydicom_encode: Callable[..., bytes | None] = messages.encode

    def encode(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> Any:
        if is_implicit_vr and is_little_endian and not deflated:
            fast = encode_command_set(ds)
            if fast is not None:
                return fast
        return pydicom_encode(ds, is_implicit_vr, is_little_endian, deflated)

    encode.imagebank_fast_path = True  # type: ignore[attr-defined]
    messages.encode = encode
