"""Id normalisation and hashing, one policy for every channel.

Quick Audience leaves the normalisation before hashing unspecified; ours is explicit, so that a
hashed id matches what a platform computes from the same person:

- mobile: digits only, a leading 86 / +86 dropped, then the 11-digit mainland number;
- email: trimmed and lower-cased;
- idfa: upper-case; imei, oaid, mac: lower-case; every other id: trimmed.

`hashed(value, "md5" | "sha256")` is the lower-case hex digest of the UTF-8 normalised value.

`aes` is Quick Audience's encrypted form: Base64 of AES-128-ECB with PKCS#7 padding under the
organisation's key of exactly 16 characters 0-9/A-F, used as its 16 ASCII bytes. That is MySQL's
``TO_BASE64(AES_ENCRYPT(id, key))`` under its default mode, which the manual's examples use, so a
receiver decrypts with the same key in SQL or with `decrypt_aes`. ECB makes the same id the same
ciphertext, which is what matching needs and, as with a hash, shows which rows are equal.
"""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_NOT_DIGIT = re.compile(r"\D+")
_MAINLAND_MOBILE = re.compile(r"1[3-9]\d{9}")
_AES_KEY = re.compile(r"[0-9A-Fa-f]{16}")


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


def check_aes_key(key: str) -> bytes:
    if not _AES_KEY.fullmatch(key or ""):
        raise IdError("the AES key must be exactly 16 characters from 0-9 and A-F")
    return key.encode("ascii")


def encrypt_aes(value: str, key: str) -> str:
    padder = padding.PKCS7(128).padder()
    data = padder.update(value.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(check_aes_key(key)), modes.ECB()).encryptor()  # noqa: S305
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode("ascii")


def decrypt_aes(text: str, key: str) -> str:
    try:
        decryptor = Cipher(algorithms.AES(check_aes_key(key)), modes.ECB()).decryptor()  # noqa: S305
        data = decryptor.update(base64.b64decode(text, validate=True)) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return (unpadder.update(data) + unpadder.finalize()).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise IdError(f"{text[:40]!r} is not an AES ciphertext of this key ({exc})") from None


def hashed(value: str, form: str) -> str:
    if form == "raw":
        return value
    if form == "md5":
        return hashlib.md5(value.encode("utf-8")).hexdigest()
    if form == "sha256":
        return hashlib.sha256(value.encode("utf-8")).hexdigest()
    raise IdError(f"unknown id form {form!r}; use raw, md5 or sha256 (aes needs a key)")


def prepare(id_type: str, value: str, form: str) -> str:
    """The id as a channel receives it: normalised, then in `form`."""
    return hashed(normalise(id_type, value), form)
