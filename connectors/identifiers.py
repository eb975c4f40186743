"""Id normalisation and hashing, one policy for every channel.

Quick Audience leaves the normalisation before hashing unspecified; ours is explicit, so that a
hashed id matches what a platform computes from the same person:

- mobile: digits only, a leading 86 / +86 dropped, then the 11-digit mainland number;
- email: trimmed and lower-cased;
- idfa: upper-case; imei, oaid, mac: lower-case; every other id: trimmed.

`hashed(value, "md5" | "sha256")` is the lower-case hex digest of the UTF-8 normalised value.
"""

from __future__ import annotations

import hashlib
import re

_NOT_DIGIT = re.compile(r"\D+")
_MAINLAND_MOBILE = re.compile(r"1[3-9]\d{9}")


class IdError(ValueError):
    """An id that cannot be normalised for its type."""


def normalise(id_type: str, value: str) -> str:
    text = str(value).strip()
    if not text:
        raise IdError(f"empty {id_type}")
    if id_type == "mobile":
        digits = _NOT_DIGIT.sub("", text)
        if len(digits) == 13 and digits.startswith("86"):
            digits = digits[2:]
        if not _MAINLAND_MOBILE.fullmatch(digits):
            raise IdError(f"{value!r} is not an 11-digit mainland mobile")
        return digits
    if id_type == "email":
        if "@" not in text:
            raise IdError(f"{value!r} is not an e-mail address")
        return text.lower()
    if id_type == "idfa":
        return text.upper()
    if id_type in ("imei", "oaid", "mac"):
        return text.lower()
    return text


def hashed(value: str, form: str) -> str:
    if form == "raw":
        return value
    if form == "md5":
        return hashlib.md5(value.encode("utf-8")).hexdigest()
    if form == "sha256":
        return hashlib.sha256(value.encode("utf-8")).hexdigest()
    raise IdError(f"unknown id form {form!r}; use raw, md5 or sha256")


def prepare(id_type: str, value: str, form: str) -> str:
    """The id as a channel receives it: normalised, then in `form`."""
    return hashed(normalise(id_type, value), form)
