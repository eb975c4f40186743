"""The raw layer's contract: every table ``oa load`` accepts, its columns, key and checks.

One definition serves the demo-data generator, the loader's DDL, the Great Expectations suites
and the documentation, so a column is declared once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal

import pyarrow as pa

from connectors.identifiers import id_types

ColumnType = Literal["text", "integer", "double", "decimal", "date", "timestamp"]

# Money: a "decimal" column holds CNY exactly, as DECIMAL(18, 2) on DuckDB and NUMERIC(18, 2) on
# PostgreSQL: fen (cents) exactly and up to 16 digits of yuan. A double cannot hold 0.10, so four
# lines summing to 200.00 would come to 199.99999999999997 and miss a 200 breakpoint.
MONEY_PRECISION = 18
MONEY_SCALE = 2
_CENT = Decimal(1).scaleb(-MONEY_SCALE)
_MONEY_LIMIT = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE)

RAW_SCHEMA = "raw"
QUARANTINE_TABLE = "raw_quarantine"

# The 14 id types of the manual plus the brand's own member id: the registry, seeds/id_types.csv.
ID_TYPES: tuple[str, ...] = id_types()
EVENT_TYPES = ("view", "favourite", "add_to_cart", "purchase", "login", "share")
CHANNELS = ("app", "web", "mini_program", "store")
OBJECT_ATTRIBUTES = ("product", "category", "brand", "page")
GENDERS = ("male", "female", "unknown")
MEMBER_LEVELS = ("none", "silver", "gold", "platinum")
ORDER_STATUSES = ("paid", "refunded", "cancelled")
SEASONS = ("spring", "summer", "autumn", "winter", "all")

# A mainland mobile as people type it: optional +86/86 prefix, spaces or dashes between groups.
RAW_MOBILE_PATTERN = r"^\s*(\+?86)?[\s-]*1[3-9][0-9][\s-]?[0-9]{4}[\s-]?[0-9]{4}\s*$"
RAW_EMAIL_PATTERN = r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = True
    description: str = ""
    allowed: tuple[str, ...] | None = None  # the exact values allowed
    pattern: str | None = None  # regex the raw text must match
    pattern_hint: str = ""  # what the pattern means, for error messages
    min_value: float | None = None
    not_in_future: bool = False


@dataclass(frozen=True)
class RawTable:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: str
    declared_only: bool = False  # part of the contract, filled by a later capability
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _c(name: str, type_: ColumnType, description: str, **kw) -> Column:
    return Column(name=name, type=type_, description=description, **kw)


def _media_log_columns(event: str) -> tuple[Column, ...]:
    """The fields media return in a monitoring log, the same for impressions and clicks."""
    return (
        _c("media_name", "text", "Media that served the ad.", nullable=False),
        _c("monitor_campaign_name", "text", "Monitoring campaign."),
        _c("campaign_id", "text", "Media campaign id."),
        _c("creative_id", "text", "Creative id."),
        _c("imei", "text", "Device IMEI (often md5)."),
        _c("idfa", "text", "Device IDFA."),
        _c("oaid", "text", "Device OAID."),
        _c("android_id", "text", "Android id."),
        _c("mac", "text", "MAC address."),
        _c("ip", "text", "Client IP."),
        _c("user_agent", "text", "Client user agent."),
        _c("os", "text", "Operating system."),
        _c("city", "text", "City."),
        _c("city_tier", "text", "City tier."),
        _c("occurred_at", "timestamp", f"When the {event} happened.", nullable=False,
           not_in_future=True),
    )


RAW_TABLES: dict[str, RawTable] = {
    t.name: t
    for t in (
        RawTable(
            name="customers",
            description="Registered members of the brand, one row per member account.",
            key="customer_id",
            columns=(
                _c("customer_id", "text", "Member id in the shop system.", nullable=False),
                _c("mobile", "text", "Mobile number as entered; may carry +86 and spaces.",
                   pattern=RAW_MOBILE_PATTERN,
                   pattern_hint="a mainland mobile: 11 digits starting 13-19, optional +86"),
                _c("email", "text", "E-mail address as entered; case and spaces vary.",
                   pattern=RAW_EMAIL_PATTERN, pattern_hint="an e-mail address"),
                _c("gender", "text", "male, female or unknown.", allowed=GENDERS),
                _c("birth_date", "date", "Date of birth.", not_in_future=True),
                _c("city", "text", "City of residence."),
                _c("member_level", "text", "Loyalty tier.", allowed=MEMBER_LEVELS),
                _c("registered_at", "timestamp", "When the account was created.",
                   nullable=False, not_in_future=True),
            ),
        ),
        RawTable(
            name="products",
            description="Product catalogue at SPU grain.",
            key="item_id",
            columns=(
                _c("item_id", "text", "Product id (SPU).", nullable=False),
                _c("name", "text", "Product name.", nullable=False),
                _c("category", "text", "Level-1 category."),
                _c("brand", "text", "Brand name."),
                _c("price", "decimal", "List price in CNY.", min_value=0),
                _c("season", "text", "Season the product is sold for.", allowed=SEASONS),
                _c("listed_at", "timestamp", "When the product was listed.", not_in_future=True),
            ),
        ),
        RawTable(
            name="orders",
            description="Orders, one row per order.",
            key="order_id",
            columns=(
                _c("order_id", "text", "Order id.", nullable=False),
                _c("customer_id", "text", "Member who placed the order.", nullable=False),
                _c("ordered_at", "timestamp", "When the order was placed.", nullable=False,
                   not_in_future=True),
                _c("channel", "text", "Sales channel.", nullable=False, allowed=CHANNELS),
                _c("status", "text", "paid, refunded or cancelled.", nullable=False,
                   allowed=ORDER_STATUSES),
                _c("total_amount", "decimal", "Amount paid in CNY.", nullable=False, min_value=0),
            ),
        ),
        RawTable(
            name="order_items",
            description="Order lines, one row per product in an order.",
            key="order_item_id",
            columns=(
                _c("order_item_id", "text", "Order line id.", nullable=False),
                _c("order_id", "text", "Order the line belongs to.", nullable=False),
                _c("item_id", "text", "Product bought.", nullable=False),
                _c("quantity", "integer", "Units bought.", nullable=False, min_value=1),
                _c("unit_price", "decimal", "Price per unit in CNY.", nullable=False, min_value=0),
                _c("amount", "decimal", "Line amount in CNY.", nullable=False, min_value=0),
            ),
        ),
        RawTable(
            name="behavior_events",
            description="Behaviour events from apps, web, mini-programs and stores.",
            key="event_id",
            columns=(
                _c("event_id", "text", "Event id.", nullable=False),
                _c("user_id_type", "text", "Id type of user_id.", nullable=False,
                   allowed=ID_TYPES),
                _c("user_id", "text", "Who acted, as seen by the collecting channel.",
                   nullable=False),
                _c("event_type", "text", "Behaviour type.", nullable=False, allowed=EVENT_TYPES),
                _c("channel", "text", "Where it happened.", nullable=False, allowed=CHANNELS),
                _c("occurred_at", "timestamp", "When it happened.", nullable=False,
                   not_in_future=True),
                _c("object_attribute", "text", "Kind of object acted on.",
                   allowed=OBJECT_ATTRIBUTES),
                _c("object_value", "text", "The object acted on (product name, category...)."),
                _c("item_id", "text", "Product id when the object is a product."),
                _c("event_count", "integer", "How many times.", nullable=False, min_value=1),
                _c("amount", "decimal", "Money involved in CNY.", min_value=0),
            ),
        ),
        RawTable(
            name="identity_links",
            description="Pairs of typed ids observed together (login, binding, device match).",
            key="link_id",
            columns=(
                _c("link_id", "text", "Link id.", nullable=False),
                _c("left_id_type", "text", "Id type of left_id.", nullable=False,
                   allowed=ID_TYPES),
                _c("left_id", "text", "First id.", nullable=False),
                _c("right_id_type", "text", "Id type of right_id.", nullable=False,
                   allowed=ID_TYPES),
                _c("right_id", "text", "Second id.", nullable=False),
                _c("source", "text", "System that observed the pair."),
                _c("observed_at", "timestamp", "When the pair was observed.", nullable=False,
                   not_in_future=True),
            ),
        ),
        RawTable(
            name="media_impressions",
            description="Ad impressions returned by media monitoring links (return-flow).",
            key="impression_id",
            declared_only=True,
            columns=(_c("impression_id", "text", "Monitoring log id.", nullable=False),
                     *_media_log_columns("impression")),
        ),
        RawTable(
            name="media_clicks",
            description="Ad clicks returned by media monitoring links (return-flow).",
            key="click_id",
            declared_only=True,
            columns=(_c("click_id", "text", "Monitoring log id.", nullable=False),
                     *_media_log_columns("click")),
        ),
    )
}

# The order the demo loads tables in (and the nightly job lists them in).
LOAD_ORDER: tuple[str, ...] = tuple(RAW_TABLES)


def get_table(name: str) -> RawTable:
    try:
        return RAW_TABLES[name]
    except KeyError:
        known = ", ".join(RAW_TABLES)
        raise KeyError(f"unknown raw table {name!r}; the raw tables are: {known}") from None


ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "integer": pa.int64(),
    "double": pa.float64(),
    "decimal": pa.decimal128(MONEY_PRECISION, MONEY_SCALE),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "boolean": pa.bool_(),
}


def arrow_schema(table: RawTable) -> pa.Schema:
    """The Arrow/Parquet schema of a raw table, straight from the contract."""
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable)
                      for c in table.columns])


def to_decimal(value: str | int | float | Decimal) -> Decimal:
    """The exact value of a decimal (money) column at MONEY_SCALE, or ValueError saying why not.

    Text and decimals are taken exactly, so "199.99" never passes through a float and a value
    with more decimals than the scale is an error rather than silently rounded. A float has no
    exact cents to keep (0.1 is 0.1000000000000000055...), so it is rounded to the scale from its
    shortest repr, half away from zero as both engines round: what a Parquet double was meant to say.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("is not a number")
        exact = Decimal(repr(value))
    else:
        try:
            exact = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError("is not a number") from None
        if not exact.is_finite():
            raise ValueError("is not a number")
    rounded = exact.quantize(_CENT, rounding=ROUND_HALF_UP) if abs(exact) < _MONEY_LIMIT else exact
    if abs(rounded) >= _MONEY_LIMIT:
        raise ValueError(f"is too large: at most {MONEY_PRECISION - MONEY_SCALE} digits before "
                         "the decimal point")
    if rounded != exact and not isinstance(value, float):
        raise ValueError(f"has more than {MONEY_SCALE} decimals")
    return rounded
