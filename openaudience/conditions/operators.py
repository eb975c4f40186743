"""The one set of operator names, for every domain (audiences, AIPL rules, product pools).

A tag condition is `{name: <tag>, <operator>: <value>}`; which operators apply depends on the
tag's type (the user tag catalogue for audiences and AIPL rules, the product tag catalogue for
pools). Negative operators (not_in, not_equals, ...) are the complement of their positive twin,
so a missing value meets them."""

from __future__ import annotations

TEXT_OPS = ("equals", "not_equals", "contains", "not_contains", "starts_with", "ends_with",
            "not_starts_with", "not_ends_with")
COMPARE_OPS = ("=", "!=", ">", ">=", "<", "<=")
NULL_OPS = ("is_null", "is_not_null")
OPS_BY_TYPE = {
    "enum": ("in", "not_in", *NULL_OPS),
    "text": (*TEXT_OPS, *NULL_OPS),
    "multi_value": ("contains_all", "contains_any", *NULL_OPS),
    "numeric": (*COMPARE_OPS, "between", *NULL_OPS),
    "date": (*COMPARE_OPS, "between", "last_days", "this_week", "this_month", "before_days_ago",
             *NULL_OPS),
}
ALL_TAG_OPS = tuple(dict.fromkeys(op for ops in OPS_BY_TYPE.values() for op in ops))
NO_VALUE_OPS = ("is_null", "is_not_null", "this_week", "this_month")
DAY_OPS = ("last_days", "before_days_ago")

DEPRECATED_OPS = {"not_null": "is_not_null", "within_last_days": "last_days"}
"""Old operator spellings (of the AIPL rules) and the name that replaces each."""
