"""Person name folding for fuzzy matching (PS3.18 8.3.4.1, PS3.4 C.2.2.2.1)."""

from __future__ import annotations

import unicodedata


def fold_person_name(value: str | None) -> str | None:
    """Upper-case, accent-free form of a PN value with components separated by single spaces.

    Only the first (alphabetic) component group is used: ideographic and phonetic groups
    (after ``=``) are not comparable letter by letter. ``"Müller^Hans^^Dr."`` -> ``"MULLER HANS DR."``.
    """
    if not value:
        return None
    alphabetic = value.split("=", 1)[0]
    decomposed = unicodedata.normalize("NFKD", alphabetic)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    words = stripped.replace("^", " ").upper().split()
    return " ".join(words) or None
