"""Id normalisation and hashing, one policy for every channel.

Quick Audience leaves the normalisation before hashing unspecified; ours is explicit, so that a
hashed id matches what a platform computes from the same person, and the same as the warehouse's.
Which rule an id type follows is data: the `normalisation` column of the id-type registry,
`seeds/id_types.csv`, which dbt reads too (`macros/normalize.sql`). The rules are code, in both
places, and a test runs both over one hostile corpus and requires equal results:

- trim: white space off both ends (ASCII white space, U+00A0, U+3000); nothing left is an error;
- lower / upper: trimmed, then ASCII letters lower- or upper-cased (as on every SQL engine);
- email: trimmed, ASCII-lower-cased, and it must hold an @;
- mobile_cn: the digits 0-9 alone, a leading 86 dropped, then an 11-digit mainland number.

An id type the registry lacks is trimmed, as in SQL.

`hashed(value, "md5" | "sha256")` is the lower-case hex digest of the UTF-8 normalised value.

`aes` is Quick Audience's encrypted form: Base64 of AES-128-ECB with PKCS#7 padding under the
organisation's key of exactly 16 characters 0-9/A-F, used as its 16 ASCII bytes. That is MySQL's
``TO_BASE64(AES_ENCRYPT(id, key))`` under its default mode, which the manual's examples use, so a
receiver decrypts with the same key in SQL or with `decrypt_aes`. ECB makes the same id the same
ciphertext, which is what matching needs and, as with a hash, shows which rows are equal.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

REGISTRY_FILE = Path(__file__).resolve().parents[1] / "seeds" / "id_types.csv"
RULES = ("trim", "lower", "upper", "email", "mobile_cn")
_SPACE = " \t\n\v\f\r\u00a0\u3000"
_NOT_DIGIT = re.compile(r"[^0-9]+")  # ASCII: `\D` would keep other scripts' digits
_MAINLAND_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_TO_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_TO_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_AES_KEY = re.compile(r"[0-9A-Fa-f]{16}")


class IdError(ValueError):
    """An id that cannot be normalised for its type."""


class RegistryError(ValueError):
    """The id-type registry (seeds/id_types.csv) is malformed."""


@dataclass(frozen=True)
class IdType:
    name: str
    label: str
    is_device: bool
    is_marketable: bool
    normalisation: str
    in_audiences: bool


@cache
def registry(path: Path = REGISTRY_FILE) -> dict[str, IdType]:
    """The id types of `seeds/id_types.csv`, in file order."""
    out: dict[str, IdType] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            def flag(column: str, row=row, line=line) -> bool:
                value = (row.get(column) or "").strip().lower()
                if value not in ("true", "false"):
                    raise RegistryError(f"{path}:{line}: {column} must be true or false, not {value!r}")
                return value == "true"

            name, rule = row.get("id_type") or "", row.get("normalisation") or ""
            for column, value in (("id_type", name), ("normalisation", rule)):
                if value != value.strip():  # dbt's seed keeps it: SQL and Python would differ
                    raise RegistryError(f"{path}:{line}: {column} {value!r} has white space around it")
            if not name or name in out:
                raise RegistryError(f"{path}:{line}: id_type {name!r} is empty or repeated")
            if rule not in RULES:
                raise RegistryError(f"{path}:{line}: normalisation {rule!r} of {name} is not one of "
                                    f"{', '.join(RULES)}")
            out[name] = IdType(name, row.get("label") or name, flag("is_device"), flag("is_marketable"),
                               rule, flag("in_audiences"))
    return out


def id_types() -> tuple[str, ...]:
    """Every id type of the registry."""
    return tuple(registry())


def audience_id_types() -> tuple[str, ...]:
    """The id types an audience can be built on and delivered by (columns of user_tags)."""
    return tuple(name for name, t in registry().items() if t.in_audiences)


def normalise_by_rule(rule: str, value: str) -> str:
    """`value` in the canonical form of `rule`; IdError where SQL's `normalize_by_rule` gives NULL."""
    text = str(value)
    if rule == "mobile_cn":
        digits = _NOT_DIGIT.sub("", text)
        if len(digits) == 13 and digits.startswith("86"):
            digits = digits[2:]
        if not _MAINLAND_MOBILE.fullmatch(digits):
            raise IdError(f"{value!r} is not an 11-digit mainland mobile")
        return digits
    text = text.strip(_SPACE)
    if not text:
        raise IdError("an empty id")
    if rule == "email":
        if "@" not in text:
            raise IdError(f"{value!r} is not an e-mail address")
        return text.translate(_TO_LOWER)
    if rule == "lower":
        return text.translate(_TO_LOWER)
    if rule == "upper":
        return text.translate(_TO_UPPER)
    return text


def normalise(id_type: str, value: str) -> str:
    """`value` as the warehouse holds ids of `id_type` (the registry's rule; trim if unknown)."""
    known = registry().get(id_type)
    try:
        return normalise_by_rule(known.normalisation if known else "trim", value)
    except IdError as exc:
        if str(exc) == "an empty id":
            raise IdError(f"empty {id_type}") from None
        raise


def mask(id_type: str, value: str) -> str:
    """An id as a person may see it in a UI or a log: enough to tell ids apart, not to contact
    anyone. one_id (ours, meaningless outside) is shown whole."""
    text = str(value)
    if id_type == "one_id":
        return text
    if id_type == "mobile" and len(text) == 11:
        return f"{text[:3]}****{text[-4:]}"
    if id_type == "email" and "@" in text:
        local, _, domain = text.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return f"{text[:2]}***{text[-2:]}" if len(text) > 8 else "***"


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
