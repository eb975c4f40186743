"""Deterministic synthetic demo data for the raw tables (see ``openaudience.core.schema.raw``).

The model, in short:

* Customers register over the three years before ``end_date``, more of them recently. Each has a
  gender, a city, one or two favourite categories, a preferred channel and a buying cohort: never
  buys, buys once, or buys repeatedly at a gamma-distributed rate (some repeat buyers churn part
  way). Spend is therefore Pareto-like, and the member level follows spend.
* Orders follow a seasonal calendar (Double 11 and December peaks, a smaller 618 peak, a weekly
  cycle, a Spring Festival lull) and an hour-of-day profile, and only happen after registration.
  Order lines pick products from the buyer's favourite categories, Zipf-like within a category.
* Behaviour events are browsing (view, favourite, add_to_cart, login, share), the view and
  add_to_cart that precede an order line, and one purchase event per paid order line. Most are
  keyed by member_id; some app events by one of the user's devices, some mini-program events by
  the user's openid, and a few come from anonymous devices that appear in no identity link.
* Identity links pair member ids with openids, devices and (dirty) mobiles, openids with unionids,
  repeat some observations, and plant explosive cases: shared store tablets linked to hundreds of
  members and ``test@example.com`` linked to ~200 mobiles.

Users are generated chunk by chunk; every chunk has its own random stream derived from
``(seed, chunk index)`` and is appended to one Parquet file per table, so memory is bounded by
``chunk_users`` and the output depends only on the config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openaudience.core.schema.raw import (
    ARROW_TYPES,
    CHANNELS,
    EVENT_TYPES,
    GENDERS,
    ID_TYPES,
    MEMBER_LEVELS,
    OBJECT_ATTRIBUTES,
    ORDER_STATUSES,
    RAW_TABLES,
    SEASONS,
    arrow_schema,
)

Progress = Callable[[str, int, int], None]

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    users: int = 100_000
    days: int = 365
    seed: int = 42
    end_date: dt.date | None = None  # required by generate(); the CLI passes today's date
    chunk_users: int = 50_000  # users generated per chunk; memory is bounded by this

    def validate(self) -> None:
        if self.end_date is None:
            raise ValueError("DemoConfig.end_date is required")
        if self.users < 0:
            raise ValueError("users must be >= 0")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.chunk_users < 1:
            raise ValueError("chunk_users must be >= 1")


# --------------------------------------------------------------------------------------------
# Constants of the model
# --------------------------------------------------------------------------------------------

SECOND_US = 1_000_000
HOUR_US = 3_600 * SECOND_US
DAY_US = 24 * HOUR_US
YEAR_DAYS = 365
REGISTRATION_SPAN_DAYS = 3 * YEAR_DAYS
REGISTRATION_GROWTH = 3.0  # registrations per day at end_date vs three years earlier
PRODUCT_LISTING_SPAN_DAYS = 3 * YEAR_DAYS  # products are listed in the 3 years before the window

# Random streams: spawn keys under the seed.
STREAM_CHUNK = 0
STREAM_CATALOGUE = 1
STREAM_PLANTS = 2

# Ids
CUSTOMER_ID_DIGITS = 8  # "M00000001"; fits 10M users (more users simply get longer ids)
ITEM_ID_DIGITS = 6
ORDER_ID_DIGITS = 9
EVENT_ID_DIGITS = 10
LINK_ID_DIGITS = 9

# Customers
GENDER_SHARES = (0.37, 0.56, 0.07)  # male, female, unknown
BIRTH_YEAR_MEAN, BIRTH_YEAR_SD, BIRTH_YEAR_MIN, BIRTH_YEAR_MAX = 1991.0, 9.0, 1955, 2007
BIRTH_DATE_MISSING = 0.06
CITY_MISSING = 0.02
CITIES = (
    ("Shanghai", 9.0), ("Beijing", 8.5), ("Hangzhou", 6.0), ("Shenzhen", 6.0),
    ("Guangzhou", 6.0), ("Chengdu", 5.0), ("Nanjing", 4.5), ("Suzhou", 4.5), ("Wuhan", 4.0),
    ("Chongqing", 4.0), ("Xian", 3.5), ("Tianjin", 3.0), ("Changsha", 3.0), ("Hefei", 2.5),
    ("Zhengzhou", 2.5), ("Ningbo", 2.5), ("Qingdao", 2.5), ("Xiamen", 2.0), ("Jinan", 2.0),
    ("Dalian", 2.0), ("Shenyang", 2.0), ("Kunming", 1.8), ("Fuzhou", 1.8), ("Wuxi", 1.8),
    ("Dongguan", 1.8), ("Foshan", 1.8), ("Harbin", 1.5), ("Nanning", 1.2), ("Changchun", 1.2),
    ("Shijiazhuang", 1.2),
)
MOBILE_MISSING = 0.08
MOBILE_DIRTY = 0.03
MOBILE_SECOND_DIGIT = {3: 0.30, 5: 0.25, 8: 0.25, 7: 0.07, 9: 0.07, 6: 0.03, 4: 0.03}
# (lead, prefix, separator, trail) of the ways people mistype a mobile; all match the raw pattern
DIRTY_MOBILE_FORMS = (
    ("", "+86 ", " ", ""), ("", "+86", "", ""), ("", "86", "", ""), ("", "", " ", ""),
    ("", "", "-", ""), ("", "86-", "-", ""), (" ", "", "", " "), ("", "", "", "  "),
    (" ", "+86 ", "", ""),
)
EMAIL_PRESENT = 0.70
EMAIL_DIRTY = 0.05
EMAIL_DOMAINS = (
    ("qq.com", 0.35), ("163.com", 0.20), ("126.com", 0.08), ("gmail.com", 0.07),
    ("outlook.com", 0.06), ("sina.com", 0.05), ("hotmail.com", 0.05), ("foxmail.com", 0.05),
    ("icloud.com", 0.05), ("yahoo.com", 0.04),
)
QQ_NUMERIC_LOCAL = 0.5  # share of qq.com addresses whose local part is the QQ number
SURNAMES = (
    "wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun", "ma",
    "zhu", "hu", "guo", "he", "gao", "lin", "luo", "zheng", "liang", "xie", "song", "tang", "han",
    "feng", "deng", "cao", "peng",
)
GIVEN_NAMES = (
    "wei", "fang", "na", "min", "jing", "li", "qiang", "lei", "jun", "yang", "yong", "yan", "jie",
    "tao", "ming", "chao", "xiu", "xia", "ping", "gang", "hui", "hua", "yu", "xin", "yi", "hao",
    "yue", "ting", "lin", "bo", "chen", "dan", "lu", "mei", "qian", "rui", "shan", "tian", "wen",
    "zi",
)
EMAIL_SEPARATORS = ("", ".", "_")
LEVEL_SPEND_THRESHOLDS = (400.0, 2_500.0, 9_000.0)  # CNY per year: silver, gold, platinum
LEVEL_NOISE_SD = 0.5  # on log spend
LEVEL_LEGACY_SILVER = 0.05  # non-spenders who kept an old silver level

# Cohorts and rates
COHORT_NEVER, COHORT_ONCE, COHORT_REPEAT = 0, 1, 2
COHORT_SHARES = (0.20, 0.22, 0.58)
CHURN_SHARE = 0.30  # of repeat buyers, who stop at a uniform time in their active span
ORDER_RATE_MEAN = 6.5  # orders per active year of a repeat buyer
ORDER_RATE_SHAPE = 1.5  # gamma shape; with the cohorts and basket sizes: top 20% ~ 80% of spend
BROWSE_RATE_MEAN = 21.0  # browsing events per active year (before the cohort factor)
BROWSE_RATE_SHAPE = 1.2
BROWSE_COHORT_FACTOR = (0.6, 0.8, 1.0)  # never, once, repeat
BROWSE_BUYER_ELASTICITY = 0.35  # repeat buyers browse more when they buy more
SECOND_FAVOURITE = 0.6

# Orders
ORDER_CHANNEL_SHARES = (0.45, 0.15, 0.30, 0.10)  # app, web, mini_program, store
CHANNEL_LOYALTY = 0.7  # share of a user's orders on the preferred channel
STATUS_SHARES = (0.95, 0.03, 0.02)  # paid, refunded, cancelled
LINE_COUNT_SHARES = (0.64, 0.22, 0.10, 0.04)  # 1-4 lines
QUANTITY_SHARES = (0.86, 0.10, 0.025, 0.01, 0.005)  # 1-5 units
FAVOURITE_PICK = (0.55, 0.25)  # first favourite, second favourite; the rest any category
DISCOUNT_SHARE, PROMO_DISCOUNT_SHARE = 0.20, 0.60
DISCOUNTS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.5)

# Behaviour events
BROWSE_TYPE_SHARES = {"view": 0.51, "favourite": 0.07, "add_to_cart": 0.18, "login": 0.20,
                      "share": 0.04}
EVENT_CHANNEL_SHARES = (0.55, 0.13, 0.30, 0.02)  # app, web, mini_program, store
FUNNEL_VIEW, FUNNEL_ADD_TO_CART = 0.8, 0.85  # chance an online order line had a view / a cart add
FUNNEL_CART_LEAD_MEAN_S, FUNNEL_VIEW_LEAD_MEAN_S = 40 * 60, 3 * 3600
VIEW_COUNT_SHARES = (0.82, 0.12, 0.04, 0.02)
OBJECT_SHARES = {  # product, category, brand, page
    "view": (0.80, 0.12, 0.05, 0.03),
    "favourite": (0.85, 0.0, 0.15, 0.0),
    "add_to_cart": (1.0, 0.0, 0.0, 0.0),
    "login": (0.0, 0.0, 0.0, 1.0),
    "share": (0.60, 0.0, 0.0, 0.40),
}
PAGES = ("login", "home", "member_center", "search", "cart", "coupon_center",
         "campaign_double11", "campaign_618", "store_locator")
LOGIN_PAGE_SHARES = (0.7, 0.2, 0.1)  # login, home, member_center
EVENT_SEASONALITY = 0.5  # browsing follows half of the order seasonality
DEVICE_KEYED_APP = 0.16  # of app events of users with a device (~10% of all app events)
OPENID_KEYED_MINI = 0.15  # of mini-program events of users with an openid (~5% overall)
ANONYMOUS_SHARE = 0.03  # extra events from anonymous devices, relative to browsing events
ANONYMOUS_DEVICES_PER_USER = 0.04
ANONYMOUS_TYPE_SHARES = (0.80, 0.05, 0.10, 0.0, 0.0, 0.05)  # over EVENT_TYPES

# Identity links
OPENID_SHARE, UNIONID_SHARE = 0.40, 0.75  # users with an openid; of those, with a unionid
DEVICE_SHARE, SECOND_DEVICE = 0.60, 0.30
DEVICE_TYPE_SHARES = (("oaid", 0.45), ("idfa", 0.35), ("imei", 0.20))
DEVICE_MOBILE_SHARE = 0.03  # users with a device and mobile who also get a device<->mobile pair
DUPLICATE_OBSERVATIONS = 0.05
BINDING_DELAY_MEAN_DAYS = 30
TABLETS_PER_100K_USERS = 5
TABLET_MEMBERS = (200, 400)
TEST_EMAIL = "test@example.com"
TEST_EMAIL_MOBILES = 200
CRM_IMPORTS = 3
SRC_APP, SRC_MINI, SRC_OPEN, SRC_SMS, SRC_POS, SRC_CRM = range(6)
SOURCES = ("app_login", "mini_program_binding", "wechat_open_platform", "sms_login",
           "store_pos", "crm_import")

# Calendar
WEEKDAY_FACTORS = (0.95, 0.93, 0.95, 0.97, 1.05, 1.12, 1.10)  # Monday..Sunday
HOUR_WEIGHTS = (0.5, 0.3, 0.15, 0.1, 0.1, 0.15, 0.4, 0.8, 1.1, 1.3, 1.5, 1.4, 1.3, 1.3, 1.3,
                1.3, 1.3, 1.2, 1.2, 1.5, 1.9, 2.1, 1.8, 1.1)

# Catalogue
CATEGORIES = ("womenswear", "menswear", "shoes", "bags", "beauty", "skincare", "home", "kitchen",
              "electronics", "sports", "kids", "snacks")
CATEGORY_SHARES = (0.16, 0.08, 0.09, 0.05, 0.11, 0.12, 0.08, 0.06, 0.07, 0.06, 0.05, 0.07)
# The planted repurchase signal: a repeat buyer's order rate (and, inversely, their churn) scales
# with their favourite category; consumables come back, durables do not. Recency and frequency
# see it only in people with many orders; a model that sees what people buy sees it in everyone.
CATEGORY_REPURCHASE = (1.0, 1.0, 0.9, 0.6, 1.6, 1.8, 0.8, 0.8, 0.45, 1.0, 1.4, 2.2)
# How much each gender (male, female, unknown) over- or under-weights a category.
GENDER_CATEGORY_AFFINITY = (
    (0.15, 2.6, 1.2, 0.5, 0.3, 0.5, 1.0, 1.0, 2.4, 1.8, 0.9, 1.0),
    (1.45, 0.3, 1.0, 1.3, 1.4, 1.3, 1.0, 1.0, 0.6, 0.8, 1.1, 1.0),
    (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
)
CATEGORY_PRICE = (  # (median CNY, lognormal sigma)
    (259, 0.6), (299, 0.6), (399, 0.5), (599, 0.8), (189, 0.6), (259, 0.6), (129, 0.8),
    (159, 0.8), (899, 0.9), (299, 0.7), (149, 0.6), (39, 0.5),
)
CATEGORY_BRANDS = (
    ("Lumina", "Aster", "Mulan Studio", "Velvet Lane", "Silk Road"),
    ("Northwind", "Ironbark", "Gentry", "Urban Fox"),
    ("Stride", "Cloudstep", "Ironbark", "Velvet Lane"),
    ("Satchelry", "Mulan Studio", "Aurelle"),
    ("Aurelle", "Rouge Atelier", "Peony", "Jade Bloom"),
    ("Glowlab", "Hanfang", "Dewy", "Peony"),
    ("Nestwell", "Linen Loom", "Oakhaus", "Homely"),
    ("Oakhaus", "Wokmaster", "Steamly"),
    ("Voltix", "Pixelon", "Soundwave", "Nimbus"),
    ("Summit", "Stride", "Pulse Athletics", "Tidal"),
    ("Little Panda", "Bubblebee", "Sprout", "Kidora"),
    ("Crunchy Bear", "Nutty Squirrel", "Tea Garden", "Golden Harvest"),
)
CATEGORY_NOUNS = (
    ("Dress", "Blouse", "Skirt", "Trench Coat", "Knit Cardigan", "Jeans", "Down Jacket"),
    ("Shirt", "Polo", "Chinos", "Blazer", "Hoodie", "Jeans", "Down Jacket"),
    ("Sneakers", "Loafers", "Boots", "Sandals", "Running Shoes", "Heels"),
    ("Tote", "Backpack", "Crossbody Bag", "Wallet", "Clutch"),
    ("Lipstick", "Foundation", "Eyeshadow Palette", "Mascara", "Perfume"),
    ("Serum", "Moisturiser", "Cleanser", "Sunscreen", "Face Mask", "Toner"),
    ("Duvet", "Pillow", "Towel Set", "Storage Box", "Lamp", "Rug"),
    ("Wok", "Rice Cooker", "Knife Set", "Kettle", "Air Fryer", "Tea Set"),
    ("Earbuds", "Power Bank", "Smartwatch", "Speaker", "Keyboard", "Tablet Stand"),
    ("Yoga Mat", "Track Jacket", "Leggings", "Dumbbells", "Tennis Racket", "Cycling Jersey"),
    ("Romper", "Kids Sneakers", "Building Blocks", "Plush Toy", "School Bag", "Pyjamas"),
    ("Mixed Nuts", "Dried Mango", "Green Tea", "Beef Jerky", "Mooncake Box", "Seaweed Snack"),
)
APPAREL_SEASON_SHARES = (0.20, 0.25, 0.20, 0.25, 0.10)  # over SEASONS
OTHER_SEASON_SHARES = (0.05, 0.10, 0.05, 0.10, 0.70)
APPAREL_CATEGORIES = {"womenswear", "menswear", "shoes", "sports", "kids"}
ZIPF_EXPONENT = 1.1
BRAND_ZIPF_EXPONENT = 0.8

# Enum codes used internally.
_CH = {name: i for i, name in enumerate(CHANNELS)}
_EV = {name: i for i, name in enumerate(EVENT_TYPES)}
_OBJ = {name: i for i, name in enumerate(OBJECT_ATTRIBUTES)}
_ID = {name: i for i, name in enumerate(ID_TYPES)}
_ST = {name: i for i, name in enumerate(ORDER_STATUSES)}
DEVICE_TYPES = tuple(_ID[name] for name, _ in DEVICE_TYPE_SHARES)
DEVICE_TYPE_PROBS = tuple(p for _, p in DEVICE_TYPE_SHARES)

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

_POW10 = 10 ** np.arange(19, dtype=np.int64)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_TOKEN_ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _choose(rng: np.random.Generator, probs: Sequence[float], size: int) -> np.ndarray:
    """Codes 0..len(probs)-1 drawn with the given (unnormalised) probabilities."""
    cum = np.cumsum(np.asarray(probs, dtype=np.float64))
    codes = np.searchsorted(cum / cum[-1], rng.random(size), side="right")
    return np.minimum(codes, len(cum) - 1).astype(np.int64)


def _choose_by_row(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For every entry of ``rows``, a column drawn with the weights of that row of ``weights``."""
    n_rows, n_cols = weights.shape
    cum = np.cumsum(weights, axis=1)
    cum = cum / cum[:, -1:]
    cum[:, -1] = 1.0
    flat = (cum + np.arange(n_rows)[:, None]).ravel()
    pos = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return np.minimum(pos - rows * n_cols, n_cols - 1).astype(np.int64)


def _permute(values: np.ndarray, modulus: int, mult: int, add: int) -> np.ndarray:
    """A scrambling bijection on [0, modulus), a power of ten (``mult`` is coprime with it):
    affine map, digit reversal, affine map. Consecutive inputs give unrelated-looking outputs."""
    digits = len(str(modulus)) - 1
    x = (values.astype(np.int64) % modulus * (mult % modulus) + add) % modulus
    reversed_ = np.zeros_like(x)
    for _ in range(digits):
        reversed_ = reversed_ * 10 + x % 10
        x //= 10
    return (reversed_ * (mult % modulus) + add) % modulus


def _coprime_multiplier(rng: np.random.Generator, modulus: int) -> int:
    while True:
        m = int(rng.integers(modulus // 10, modulus))
        if math.gcd(m, modulus) == 1:
            return m


def _strings_from_bytes(chars: np.ndarray) -> pa.Array:
    """A string array from an (n, width) uint8 matrix of ASCII characters."""
    n, width = chars.shape
    offsets = np.arange(n + 1, dtype=np.int64) * width
    data = np.ascontiguousarray(chars, dtype=np.uint8)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)),
                                       pa.py_buffer(data))


def _numbered(prefix: str, numbers: np.ndarray, min_digits: int = 1) -> pa.Array:
    """``prefix`` followed by each number in decimal, zero-padded to ``min_digits``."""
    numbers = np.asarray(numbers, dtype=np.int64)
    n = len(numbers)
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    digits = np.maximum(min_digits, np.searchsorted(_POW10, numbers, side="right"))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(len(head) + digits, out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for k, byte in enumerate(head):
        data[offsets[:-1] + k] = byte
    ends, rest = offsets[1:], numbers.copy()
    always = int(digits.min()) if n else 0
    for j in range(int(digits.max()) if n else 0):
        if j < always:
            data[ends - 1 - j] = rest % 10 + 48
        else:
            sel = digits > j
            data[ends[sel] - 1 - j] = rest[sel] % 10 + 48
        rest //= 10
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)),
                                       pa.py_buffer(data))


def _uuids(rng: np.random.Generator, n: int, upper: bool) -> pa.Array:
    hexes = _HEX[rng.integers(0, 16, size=(n, 32))]
    if upper:
        hexes = np.where(hexes >= ord("a"), hexes - 32, hexes).astype(np.uint8)
    dash = np.full((n, 1), ord("-"), dtype=np.uint8)
    return _strings_from_bytes(np.hstack([hexes[:, :8], dash, hexes[:, 8:12], dash,
                                          hexes[:, 12:16], dash, hexes[:, 16:20], dash,
                                          hexes[:, 20:]]))


def _wechat_ids(rng: np.random.Generator, n: int, prefix: bytes) -> pa.Array:
    """28-character WeChat-style ids (openid / unionid) starting with ``prefix``."""
    body = _TOKEN_ALPHABET[rng.integers(0, len(_TOKEN_ALPHABET), size=(n, 28 - len(prefix)))]
    head = np.tile(np.frombuffer(prefix, dtype=np.uint8), (n, 1))
    return _strings_from_bytes(np.hstack([head, body]))


def _imeis(tac: str, numbers: np.ndarray, mult: int, add: int) -> pa.Array:
    """15-digit IMEIs: a two-digit type allocation prefix and 13 unique digits."""
    return _numbered(tac, _permute(numbers, 10**13, mult, add), 13)


def _text(values: Sequence[str]) -> pa.Array:
    return pa.array(list(values), type=pa.string())


def _take(values: pa.Array, codes: np.ndarray) -> pa.Array:
    return values.take(pa.array(np.asarray(codes, dtype=np.int64)))


def _with_nulls(values: pa.Array, missing: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(missing), pa.scalar(None, values.type), values)


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64).view("datetime64[us]"))


def _money(values: np.ndarray) -> pa.Array:
    """Amounts already rounded to the fen, as the contract's exact decimal; NaN becomes null.
    Arrow rounds each double to the nearest fen, so 49.9 is written as 49.90, not 49.899999..."""
    values = np.asarray(values, dtype=np.float64)
    return pa.array(values, mask=np.isnan(values)).cast(ARROW_TYPES["decimal"])


def _floor_seconds(us: np.ndarray) -> np.ndarray:
    return us // SECOND_US * SECOND_US


# --------------------------------------------------------------------------------------------
# Calendar: seasonality of orders and events
# --------------------------------------------------------------------------------------------


def _season_weights(first_day: dt.date, days: int) -> np.ndarray:
    dates = np.datetime64(first_day, "D") + np.arange(days)
    months = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dom = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    w = np.asarray(WEEKDAY_FACTORS)[weekday]
    nov, dec, jun = months == 11, months == 12, months == 6
    w = w + np.where((months == 10) & (dom >= 20), 0.3, 0.0)  # Double 11 pre-sales
    w = w + np.where(nov & (dom <= 10), 0.8 + 0.15 * dom, 0.0)
    w = w + np.where(nov & (dom == 11), 7.0, 0.0)  # Singles' Day
    w = w + np.where(nov & (dom > 11), 0.4, 0.0)
    w = w + np.where(dec, 0.6, 0.0) + np.where(dec & (dom == 12), 2.5, 0.0)  # Double 12
    w = w + np.where(jun & (dom <= 17), 0.4, 0.0) + np.where(jun & (dom == 18), 3.0, 0.0)  # 618
    lull = ((months == 1) & (dom >= 25)) | ((months == 2) & (dom <= 12))  # Spring Festival
    return w * np.where(lull, 0.65, 1.0)


def _promo_days(first_day: dt.date, days: int) -> np.ndarray:
    dates = np.datetime64(first_day, "D") + np.arange(days)
    months = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dom = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    return (((months == 11) & (dom <= 11)) | ((months == 6) & (dom <= 18))
            | ((months == 12) & (dom == 12)))


@dataclass(frozen=True)
class _Calendar:
    start_us: int  # first instant of the window
    end_us: int  # end_date 00:00, exclusive
    days: int
    order_cum: np.ndarray  # cumulative seasonal weight at day boundaries (mean weight 1 per day)
    event_cum: np.ndarray
    promo: np.ndarray  # per day: a sales festival with more discounts

    @staticmethod
    def build(config: DemoConfig) -> _Calendar:
        assert config.end_date is not None
        end_us = (config.end_date - dt.date(1970, 1, 1)).days * DAY_US
        first = config.end_date - dt.timedelta(days=config.days)
        reference = _season_weights(config.end_date - dt.timedelta(days=YEAR_DAYS), YEAR_DAYS)
        orders = _season_weights(first, config.days) / reference.mean()
        events = 1.0 + EVENT_SEASONALITY * (orders - 1.0)
        return _Calendar(
            start_us=end_us - config.days * DAY_US,
            end_us=end_us,
            days=config.days,
            order_cum=np.concatenate([[0.0], np.cumsum(orders)]),
            event_cum=np.concatenate([[0.0], np.cumsum(events)]),
            promo=_promo_days(first, config.days),
        )

    def _position(self, us: np.ndarray) -> np.ndarray:
        return (np.asarray(us, dtype=np.float64) - self.start_us) / DAY_US

    def weight_between(self, cum: np.ndarray, lo_us: np.ndarray, hi_us: np.ndarray) -> np.ndarray:
        """Seasonal weight (in average days) of each interval [lo, hi)."""
        grid = np.arange(self.days + 1, dtype=np.float64)
        return (np.interp(self._position(hi_us), grid, cum)
                - np.interp(self._position(lo_us), grid, cum))

    def sample(self, rng: np.random.Generator, cum: np.ndarray, lo_us: np.ndarray,
               hi_us: np.ndarray) -> np.ndarray:
        """One timestamp (whole seconds) per interval [lo, hi), with the seasonal density and
        an hour-of-day profile. ``lo`` must be whole seconds and >= start, ``hi`` <= end."""
        n = len(lo_us)
        grid = np.arange(self.days + 1, dtype=np.float64)
        c_lo = np.interp(self._position(lo_us), grid, cum)
        c_hi = np.interp(self._position(hi_us), grid, cum)
        pos = np.interp(c_lo + rng.random(n) * (c_hi - c_lo), cum, grid)
        day = np.minimum(pos.astype(np.int64), self.days - 1)
        hour = _choose(rng, HOUR_WEIGHTS, n)
        t = self.start_us + day * DAY_US + hour * HOUR_US + rng.integers(0, 3600, n) * SECOND_US
        outside = (t < lo_us) | (t >= hi_us)  # boundary days: fall back to the exact position
        t = np.where(outside, self.start_us + (pos * DAY_US).astype(np.int64), t)
        t = np.clip(_floor_seconds(t), lo_us, np.maximum(lo_us, hi_us - SECOND_US))
        return np.minimum(t, self.end_us - SECOND_US)


# --------------------------------------------------------------------------------------------
# Things generated once: the product catalogue and the planted explosive identities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalogue:
    item_id: pa.Array  # in catalogue order (grouped by category)
    name: pa.Array
    category: np.ndarray
    brand: np.ndarray  # index into brand_names
    brand_names: pa.Array
    price: np.ndarray
    season: np.ndarray
    listed_us: np.ndarray
    cum: np.ndarray  # category index + cumulative Zipf popularity within the category
    table: pa.Table

    @property
    def size(self) -> int:
        return len(self.price)

    def sample(self, rng: np.random.Generator, category: np.ndarray) -> np.ndarray:
        """A product of each given category, Zipf-like by popularity."""
        pos = np.searchsorted(self.cum, category + rng.random(len(category)), side="right")
        return np.minimum(pos, self.size - 1)


def _category_counts(total: int) -> np.ndarray:
    share = np.asarray(CATEGORY_SHARES) / np.sum(CATEGORY_SHARES)
    counts = np.floor(share * total).astype(np.int64)
    remainder = total - counts.sum()
    counts[np.argsort(-(share * total - counts), kind="stable")[:remainder]] += 1
    return counts


def _nice_prices(raw: np.ndarray) -> np.ndarray:
    """199, 259, 49.9, 9.9: prices as shops write them."""
    high = np.ceil(raw / 10.0) * 10.0 - 1.0
    low = np.floor(raw) + 0.9
    return np.round(np.maximum(np.where(raw >= 100, high, low), 1.9), 2)


def _products(config: DemoConfig, calendar: _Calendar) -> _Catalogue:
    rng = _rng(config.seed, STREAM_CATALOGUE)
    n = max(200, min(5000, config.users // 100))
    counts = _category_counts(n)
    category = np.repeat(np.arange(len(CATEGORIES)), counts)
    brand_names = list(dict.fromkeys(b for brands in CATEGORY_BRANDS for b in brands))
    brand_index = {b: i for i, b in enumerate(brand_names)}

    brand = np.empty(n, dtype=np.int64)
    noun = np.empty(n, dtype=object)
    popularity = np.empty(n, dtype=np.float64)
    raw_price = np.empty(n, dtype=np.float64)
    season = np.empty(n, dtype=np.int64)
    start = 0
    for c, count in enumerate(counts):  # per category, a dozen iterations
        sl = slice(start, start + count)
        brands = CATEGORY_BRANDS[c]
        brand_weights = 1.0 / np.arange(1, len(brands) + 1) ** BRAND_ZIPF_EXPONENT
        picks = _choose(rng, brand_weights[rng.permutation(len(brands))], count)
        brand[sl] = [brand_index[brands[k]] for k in picks]
        noun[sl] = np.asarray(CATEGORY_NOUNS[c], dtype=object)[
            rng.integers(0, len(CATEGORY_NOUNS[c]), count)]
        ranks = rng.permutation(count) + 1
        popularity[sl] = 1.0 / ranks ** ZIPF_EXPONENT
        median, sigma = CATEGORY_PRICE[c]
        raw_price[sl] = rng.lognormal(math.log(median), sigma, count)
        shares = APPAREL_SEASON_SHARES if CATEGORIES[c] in APPAREL_CATEGORIES \
            else OTHER_SEASON_SHARES
        season[sl] = _choose(rng, shares, count)
        start += count

    # Cumulative popularity per category, offset by the category index (see _Catalogue.sample).
    cum = np.empty(n, dtype=np.float64)
    start = 0
    for c, count in enumerate(counts):
        sl = slice(start, start + count)
        seg = np.cumsum(popularity[sl])
        cum[sl] = c + seg / seg[-1]
        cum[start + count - 1] = c + 1.0
        start += count

    listed_hi = calendar.start_us - DAY_US
    listed_us = listed_hi - rng.integers(0, PRODUCT_LISTING_SPAN_DAYS * 86_400, n) * SECOND_US
    listed_us = np.minimum(listed_us, calendar.end_us - SECOND_US)
    # Item ids follow listing order, as a shop's SPU ids do.
    listing_rank = np.empty(n, dtype=np.int64)
    listing_rank[np.argsort(listed_us, kind="stable")] = np.arange(n)
    item_id = _numbered("P", listing_rank + 1, ITEM_ID_DIGITS)
    model = rng.choice(np.array(list("ABCDEFGHJKLMNPRSTX")), n)
    name = _text([f"{brand_names[b]} {noun[i]} {model[i]}{listing_rank[i] + 101}"
                  for i, b in enumerate(brand)])
    brand_arr = _text(brand_names)

    order = np.argsort(listing_rank)
    table = pa.Table.from_arrays(
        [
            _take(item_id, order),
            _take(name, order),
            _take(_text(CATEGORIES), category[order]),
            _take(brand_arr, brand[order]),
            _money(_nice_prices(raw_price)[order]),
            _take(_text(SEASONS), season[order]),
            _timestamps(listed_us[order]),
        ],
        schema=arrow_schema(RAW_TABLES["products"]),
    )
    return _Catalogue(item_id=item_id, name=name, category=category, brand=brand,
                      brand_names=brand_arr, price=_nice_prices(raw_price), season=season,
                      listed_us=listed_us, cum=cum, table=table)


@dataclass(frozen=True)
class _Plants:
    """Seed-derived constants shared by all chunks, including the explosive identities."""

    mobile_mult: int
    mobile_add: int
    qq_mult: int
    qq_add: int
    name_mult: int
    name_add: int
    imei_mult: int
    imei_add: int
    tablet_member: np.ndarray  # global user index, sorted
    tablet_of: np.ndarray  # which tablet each row belongs to
    tablet_ids: pa.Array
    test_email_member: np.ndarray  # global user index, sorted
    crm_import_us: np.ndarray

    @staticmethod
    def build(config: DemoConfig, calendar: _Calendar) -> _Plants:
        rng = _rng(config.seed, STREAM_PLANTS)
        users = config.users
        n_tablets = max(1, round(users * TABLETS_PER_100K_USERS / 100_000)) if users else 0
        members, owners = [], []
        for t in range(n_tablets):  # a handful of tablets, each a vectorised sample
            size = min(int(rng.integers(*TABLET_MEMBERS)), max(1, users // 3))
            members.append(rng.choice(users, size=size, replace=False))
            owners.append(np.full(size, t))
        tablet_member = np.concatenate(members) if members else np.zeros(0, np.int64)
        tablet_of = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        order = np.argsort(tablet_member, kind="stable")
        test_members = np.sort(rng.choice(users, size=min(TEST_EMAIL_MOBILES, users),
                                          replace=False)) if users else np.zeros(0, np.int64)
        imei_mult = _coprime_multiplier(rng, 10**13)
        imei_add = int(rng.integers(0, 10**13))
        crm_days = np.sort(rng.integers(0, calendar.days, CRM_IMPORTS))
        crm_import_us = calendar.start_us + crm_days * DAY_US + 2 * HOUR_US  # nightly imports
        return _Plants(
            mobile_mult=_coprime_multiplier(rng, 10**9), mobile_add=int(rng.integers(0, 10**9)),
            qq_mult=_coprime_multiplier(rng, 10**9), qq_add=int(rng.integers(0, 10**9)),
            name_mult=_coprime_multiplier(rng, 10**9), name_add=int(rng.integers(0, 10**9)),
            imei_mult=imei_mult, imei_add=imei_add,
            tablet_member=tablet_member[order].astype(np.int64),
            tablet_of=tablet_of[order].astype(np.int64),
            tablet_ids=_imeis("01", np.arange(n_tablets), imei_mult, imei_add),
            test_email_member=test_members.astype(np.int64),
            crm_import_us=crm_import_us,
        )


# --------------------------------------------------------------------------------------------
# One chunk of users
# --------------------------------------------------------------------------------------------


@dataclass
class _Counters:
    """Global numbering carried from chunk to chunk."""

    orders: int = 0
    events: int = 0
    links: int = 0
    devices: int = 0
    anonymous: int = 0


@dataclass
class _Users:
    first: int  # global index of the chunk's first user
    n: int
    customer_id: pa.Array
    registered_us: np.ndarray
    active_from_us: np.ndarray  # max(registered, window start)
    active_until_us: np.ndarray  # window end, or the churn time
    gender: np.ndarray
    fav1: np.ndarray
    fav2: np.ndarray
    channel: np.ndarray  # preferred channel
    cohort: np.ndarray
    order_rate: np.ndarray  # orders per active year
    browse_rate: np.ndarray  # browsing events per active year
    mobile_clean: pa.Array  # 11 digits, also for users whose mobile is missing in customers
    has_mobile: np.ndarray


def _users(rng: np.random.Generator, first: int, n: int, config: DemoConfig,
           calendar: _Calendar, plants: _Plants) -> _Users:
    g = np.arange(first, first + n, dtype=np.int64)
    span_s = REGISTRATION_SPAN_DAYS * 86_400
    growth = math.log(REGISTRATION_GROWTH)
    frac = np.log1p(rng.random(n) * (REGISTRATION_GROWTH - 1.0)) / growth  # more recent, more
    registered = calendar.end_us - span_s * SECOND_US + (frac * span_s).astype(np.int64) * SECOND_US
    registered = np.minimum(registered, calendar.end_us - SECOND_US)
    active_from = np.maximum(registered, calendar.start_us)

    gender = _choose(rng, GENDER_SHARES, n)
    affinity = np.asarray(GENDER_CATEGORY_AFFINITY) * np.asarray(CATEGORY_SHARES)
    fav1 = _choose_by_row(rng, affinity, gender)
    fav2 = np.where(rng.random(n) < SECOND_FAVOURITE, _choose_by_row(rng, affinity, gender), fav1)

    # buyers of durables more often buy once and never again (the planted signal, as below)
    once = np.asarray(COHORT_SHARES[1]) / np.asarray(CATEGORY_REPURCHASE)
    by_category = np.stack([np.full(len(CATEGORIES), COHORT_SHARES[0]), once,
                            np.full(len(CATEGORIES), COHORT_SHARES[2])], axis=1)
    cohort = _choose_by_row(rng, by_category, fav1)
    repurchase = np.asarray(CATEGORY_REPURCHASE)[fav1]
    churn = (cohort == COHORT_REPEAT) & (rng.random(n) < np.minimum(CHURN_SHARE / repurchase, 0.9))
    churn_at = active_from + (rng.random(n) * (calendar.end_us - active_from)).astype(np.int64)
    active_until = np.where(churn, np.maximum(churn_at, active_from + SECOND_US), calendar.end_us)
    active_until = np.minimum(active_until, calendar.end_us)

    rate = rng.gamma(ORDER_RATE_SHAPE, ORDER_RATE_MEAN / ORDER_RATE_SHAPE, n) * repurchase
    browse = rng.gamma(BROWSE_RATE_SHAPE, BROWSE_RATE_MEAN / BROWSE_RATE_SHAPE, n)
    browse *= np.asarray(BROWSE_COHORT_FACTOR)[cohort]
    browse *= np.where(cohort == COHORT_REPEAT,
                       (rate / ORDER_RATE_MEAN) ** BROWSE_BUYER_ELASTICITY, 1.0)

    second = np.asarray(sorted(MOBILE_SECOND_DIGIT))[
        _choose(rng, [MOBILE_SECOND_DIGIT[d] for d in sorted(MOBILE_SECOND_DIGIT)], n)]
    mobile_numbers = (10 + second) * 10**9 + _permute(g, 10**9, plants.mobile_mult,
                                                      plants.mobile_add)
    return _Users(
        first=first, n=n,
        customer_id=_numbered("M", g + 1, max(CUSTOMER_ID_DIGITS, len(str(config.users)))),
        registered_us=registered, active_from_us=active_from, active_until_us=active_until,
        gender=gender, fav1=fav1, fav2=fav2,
        channel=_choose(rng, ORDER_CHANNEL_SHARES, n),
        cohort=cohort, order_rate=rate, browse_rate=browse,
        mobile_clean=_numbered("", mobile_numbers, 11),
        has_mobile=rng.random(n) >= MOBILE_MISSING,
    )


def _dirty_mobiles(rng: np.random.Generator, clean: pa.Array) -> pa.Array:
    """The same numbers as people type them: +86, spaces, dashes, stray blanks."""
    form = _choose(rng, np.ones(len(DIRTY_MOBILE_FORMS)), len(clean))
    lead, prefix, sep, trail = (_take(_text(parts), form)
                                for parts in zip(*DIRTY_MOBILE_FORMS, strict=True))
    a = pc.utf8_slice_codeunits(clean, 0, 3)
    b = pc.utf8_slice_codeunits(clean, 3, 7)
    c = pc.utf8_slice_codeunits(clean, 7, 11)
    return pc.binary_join_element_wise(lead, prefix, a, sep, b, sep, c, trail, "")


def _emails(rng: np.random.Generator, users: _Users, plants: _Plants) -> pa.Array:
    n = users.n
    g = np.arange(users.first, users.first + n, dtype=np.int64)
    domain = _choose(rng, [w for _, w in EMAIL_DOMAINS], n)
    numeric = (domain == 0) & (rng.random(n) < QQ_NUMERIC_LOCAL)
    qq = _numbered("", 10_000 + _permute(g, 10**9, plants.qq_mult, plants.qq_add))
    name_modulus = 10 ** max(4, len(str(max(users.first + n, 1))))
    name = pc.binary_join_element_wise(
        _take(_text(SURNAMES), rng.integers(0, len(SURNAMES), n)),
        _take(_text(EMAIL_SEPARATORS), _choose(rng, (0.6, 0.25, 0.15), n)),
        _take(_text(GIVEN_NAMES), rng.integers(0, len(GIVEN_NAMES), n)),
        _numbered("", _permute(g, name_modulus, plants.name_mult, plants.name_add)),
        "",
    )
    local = pc.if_else(pa.array(numeric), qq, name)
    email = pc.binary_join_element_wise(local, _take(_text([d for d, _ in EMAIL_DOMAINS]),
                                                     domain), "@")
    dirt = np.where(rng.random(n) < EMAIL_DIRTY, _choose(rng, (0.35, 0.35, 0.3), n) + 1, 0)
    email = pc.if_else(pa.array(dirt == 1), pc.utf8_upper(email), email)
    email = pc.if_else(pa.array(dirt == 2), pc.utf8_title(email), email)
    email = pc.if_else(pa.array(dirt == 3), pc.binary_join_element_wise(
        pa.scalar(" "), email, pa.scalar("  "), ""), email)
    return _with_nulls(email, rng.random(n) >= EMAIL_PRESENT)


def _member_levels(rng: np.random.Generator, annual_spend: np.ndarray) -> np.ndarray:
    score = np.log1p(annual_spend) + rng.normal(0.0, LEVEL_NOISE_SD, len(annual_spend))
    level = np.searchsorted(np.log1p(LEVEL_SPEND_THRESHOLDS), score)
    legacy = (annual_spend == 0) & (rng.random(len(annual_spend)) < LEVEL_LEGACY_SILVER)
    return np.where(annual_spend == 0, np.where(legacy, 1, 0), level)


def _customers_table(rng: np.random.Generator, users: _Users, plants: _Plants,
                     annual_spend: np.ndarray, config: DemoConfig) -> pa.Table:
    n = users.n
    dirty = rng.random(n) < MOBILE_DIRTY
    mobile = users.mobile_clean
    if dirty.any():
        idx = np.flatnonzero(dirty)
        dirty_values = _dirty_mobiles(rng, _take(mobile, idx))
        pos = np.full(n, -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        mobile = pc.if_else(pa.array(dirty), dirty_values.take(pa.array(np.maximum(pos, 0))),
                            mobile)
    mobile = _with_nulls(mobile, ~users.has_mobile)

    year = np.clip(np.round(rng.normal(BIRTH_YEAR_MEAN, BIRTH_YEAR_SD, n)),
                   BIRTH_YEAR_MIN, BIRTH_YEAR_MAX).astype(np.int64)
    jan1 = (year - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    birth = jan1 + rng.integers(0, 365, n)
    assert config.end_date is not None
    birth = np.minimum(birth, (config.end_date - dt.date(1970, 1, 1)).days - 1)
    birth_date = pa.array(birth.astype("datetime64[D]"),
                          mask=rng.random(n) < BIRTH_DATE_MISSING)

    city = _take(_text([c for c, _ in CITIES]), _choose(rng, [w for _, w in CITIES], n))
    city = _with_nulls(city, rng.random(n) < CITY_MISSING)

    return pa.Table.from_arrays(
        [
            users.customer_id,
            mobile,
            _emails(rng, users, plants),
            _take(_text(GENDERS), users.gender),
            birth_date,
            city,
            _take(_text(MEMBER_LEVELS), _member_levels(rng, annual_spend)),
            _timestamps(users.registered_us),
        ],
        schema=arrow_schema(RAW_TABLES["customers"]),
    )


@dataclass
class _Orders:
    owner: np.ndarray  # local user index per order
    at_us: np.ndarray
    channel: np.ndarray
    status: np.ndarray
    total: np.ndarray
    order_id: pa.Array
    line_order: np.ndarray  # order index per line
    line_no: np.ndarray
    item: np.ndarray  # catalogue index per line
    quantity: np.ndarray
    unit_price: np.ndarray
    amount: np.ndarray


def _orders(rng: np.random.Generator, users: _Users, calendar: _Calendar,
            catalogue: _Catalogue, counters: _Counters) -> _Orders:
    lo, hi = users.active_from_us, users.active_until_us
    expected = users.order_rate / YEAR_DAYS * calendar.weight_between(calendar.order_cum, lo, hi)
    counts = np.where(users.cohort == COHORT_REPEAT, rng.poisson(expected), 0)
    counts = np.where(users.cohort == COHORT_ONCE, 1, counts)
    owner = np.repeat(np.arange(users.n), counts)
    at = calendar.sample(rng, calendar.order_cum, lo[owner], hi[owner])
    order = np.argsort(at, kind="stable")
    owner, at = owner[order], at[order]
    n = len(owner)

    channel = np.where(rng.random(n) < CHANNEL_LOYALTY, users.channel[owner],
                       _choose(rng, ORDER_CHANNEL_SHARES, n))
    status = _choose(rng, STATUS_SHARES, n)
    lines = 1 + _choose(rng, LINE_COUNT_SHARES, n)
    line_order = np.repeat(np.arange(n), lines)
    starts = np.cumsum(lines) - lines
    line_no = np.arange(len(line_order)) - starts[line_order] + 1
    buyer = owner[line_order]

    pick = rng.random(len(line_order))
    category = np.where(pick < FAVOURITE_PICK[0], users.fav1[buyer],
                        np.where(pick < sum(FAVOURITE_PICK), users.fav2[buyer],
                                 _choose(rng, CATEGORY_SHARES, len(line_order))))
    item = catalogue.sample(rng, category)
    quantity = 1 + _choose(rng, QUANTITY_SHARES, len(line_order))
    day = (at[line_order] - calendar.start_us) // DAY_US
    discounted = rng.random(len(line_order)) < np.where(calendar.promo[day],
                                                        PROMO_DISCOUNT_SHARE, DISCOUNT_SHARE)
    factor = np.where(discounted, np.asarray(DISCOUNTS)[_choose(rng, np.ones(len(DISCOUNTS)),
                                                                len(line_order))], 1.0)
    unit_price = np.round(catalogue.price[item] * factor, 2)
    amount = np.round(quantity * unit_price, 2)
    total = np.round(np.bincount(line_order, weights=amount, minlength=n), 2)

    order_id = _numbered("O", counters.orders + 1 + np.arange(n), ORDER_ID_DIGITS)
    counters.orders += n
    return _Orders(owner=owner, at_us=at, channel=channel, status=status, total=total,
                   order_id=order_id, line_order=line_order, line_no=line_no, item=item,
                   quantity=quantity, unit_price=unit_price, amount=amount)


def _orders_table(users: _Users, orders: _Orders) -> pa.Table:
    return pa.Table.from_arrays(
        [
            orders.order_id,
            _take(users.customer_id, orders.owner),
            _timestamps(orders.at_us),
            _take(_text(CHANNELS), orders.channel),
            _take(_text(ORDER_STATUSES), orders.status),
            _money(orders.total),
        ],
        schema=arrow_schema(RAW_TABLES["orders"]),
    )


def _order_items_table(orders: _Orders, catalogue: _Catalogue) -> pa.Table:
    order_id = _take(orders.order_id, orders.line_order)
    return pa.Table.from_arrays(
        [
            pc.binary_join_element_wise(order_id, _numbered("", orders.line_no), "-"),
            order_id,
            _take(catalogue.item_id, orders.item),
            pa.array(orders.quantity),
            _money(orders.unit_price),
            _money(orders.amount),
        ],
        schema=arrow_schema(RAW_TABLES["order_items"]),
    )


# --------------------------------------------------------------------------------------------
# Identities: openids, devices and the links between ids
# --------------------------------------------------------------------------------------------


@dataclass
class _Identities:
    openid_of: np.ndarray  # per user: index into openid, or -1
    openid: pa.Array
    device_start: np.ndarray  # per user: index of the first device
    device_count: np.ndarray  # per user: 0, 1 or 2
    device_type: np.ndarray  # per device: code in ID_TYPES
    device_id: pa.Array


def _device_ids(rng: np.random.Generator, types: np.ndarray, imei_tac: str, numbers: np.ndarray,
                plants: _Plants) -> pa.Array:
    """Ids of devices of the given types, in the given order (imei numbers must be unique)."""
    order = np.argsort(types, kind="stable")
    parts = []
    for code in sorted(set(DEVICE_TYPES)):
        sel = order[types[order] == code]
        if code == _ID["imei"]:
            parts.append(_imeis(imei_tac, numbers[sel], plants.imei_mult, plants.imei_add))
        else:
            parts.append(_uuids(rng, len(sel), upper=code == _ID["idfa"]))
    combined = pa.concat_arrays(parts)
    back = np.empty(len(types), dtype=np.int64)
    back[order] = np.arange(len(types))
    return _take(combined, back)


def _identities(rng: np.random.Generator, users: _Users, plants: _Plants,
                counters: _Counters) -> _Identities:
    n = users.n
    has_openid = rng.random(n) < OPENID_SHARE
    openid_of = np.where(has_openid, np.cumsum(has_openid) - 1, -1)
    openid = _wechat_ids(rng, int(has_openid.sum()), b"oW")

    device_count = np.where(rng.random(n) < DEVICE_SHARE,
                            1 + (rng.random(n) < SECOND_DEVICE), 0).astype(np.int64)
    device_start = np.cumsum(device_count) - device_count
    n_dev = int(device_count.sum())
    device_type = np.asarray(DEVICE_TYPES)[_choose(rng, DEVICE_TYPE_PROBS, n_dev)]
    device_id = _device_ids(rng, device_type, "86", counters.devices + np.arange(n_dev), plants)
    counters.devices += n_dev
    return _Identities(openid_of=openid_of, openid=openid, device_start=device_start,
                       device_count=device_count, device_type=device_type, device_id=device_id)


@dataclass
class _LinkPart:
    left_type: np.ndarray
    left_id: pa.Array
    right_type: np.ndarray
    right_id: pa.Array
    source: np.ndarray
    observed_us: np.ndarray


def _link_part(left_type: int | np.ndarray, left_id: pa.Array, right_type: int | np.ndarray,
               right_id: pa.Array, source: int, observed_us: np.ndarray) -> _LinkPart:
    m = len(left_id)
    return _LinkPart(np.broadcast_to(left_type, m).astype(np.int64), left_id,
                     np.broadcast_to(right_type, m).astype(np.int64), right_id,
                     np.full(m, source, dtype=np.int64), np.asarray(observed_us, dtype=np.int64))


def _uniform_after(rng: np.random.Generator, lo_us: np.ndarray, end_us: int) -> np.ndarray:
    """A whole-second time in [lo, end) for every lo."""
    span = np.maximum(end_us - lo_us, SECOND_US)
    return np.minimum(_floor_seconds(lo_us + (rng.random(len(lo_us)) * span).astype(np.int64)),
                      end_us - SECOND_US)


def _identity_links_table(rng: np.random.Generator, users: _Users, ident: _Identities,
                          plants: _Plants, calendar: _Calendar,
                          counters: _Counters) -> pa.Table:
    end = calendar.end_us
    member = _ID["member_id"]
    parts: list[_LinkPart] = []

    # Mini-program binding, and the unionid WeChat returns with it.
    bound = np.flatnonzero(ident.openid_of >= 0)
    delay = (rng.exponential(BINDING_DELAY_MEAN_DAYS, len(bound)) * DAY_US).astype(np.int64)
    bound_at = np.minimum(_floor_seconds(users.registered_us[bound] + delay), end - SECOND_US)
    openid = _take(ident.openid, ident.openid_of[bound])
    parts.append(_link_part(member, _take(users.customer_id, bound), _ID["openid"], openid,
                            SRC_MINI, bound_at))
    with_union = rng.random(len(bound)) < UNIONID_SHARE
    parts.append(_link_part(_ID["openid"], openid.filter(pa.array(with_union)), _ID["unionid"],
                            _wechat_ids(rng, int(with_union.sum()), b"oU"), SRC_OPEN,
                            bound_at[with_union]))

    # App logins: member <-> each of the member's devices.
    dev_owner = np.repeat(np.arange(users.n), ident.device_count)
    parts.append(_link_part(member, _take(users.customer_id, dev_owner), ident.device_type,
                            ident.device_id, SRC_APP,
                            _uniform_after(rng, users.registered_us[dev_owner], end)))

    # SMS logins on a device: device <-> mobile, the mobile as typed.
    first_dev = ident.device_start
    sms = np.flatnonzero((ident.device_count > 0) & users.has_mobile
                         & (rng.random(users.n) < DEVICE_MOBILE_SHARE))
    parts.append(_link_part(ident.device_type[first_dev[sms]], _take(ident.device_id,
                                                                     first_dev[sms]),
                            _ID["mobile"], _dirty_mobiles(rng, _take(users.mobile_clean, sms)),
                            SRC_SMS, _uniform_after(rng, users.registered_us[sms], end)))

    # Planted: shared store tablets, each scanned by hundreds of members.
    lo, hi = np.searchsorted(plants.tablet_member, [users.first, users.first + users.n])
    scanned = plants.tablet_member[lo:hi] - users.first
    parts.append(_link_part(member, _take(users.customer_id, scanned), _ID["imei"],
                            _take(plants.tablet_ids, plants.tablet_of[lo:hi]), SRC_POS,
                            _uniform_after(rng, users.active_from_us[scanned], end)))

    # Planted: a CRM import that filled in test@example.com for ~200 different mobiles.
    lo, hi = np.searchsorted(plants.test_email_member, [users.first, users.first + users.n])
    tested = plants.test_email_member[lo:hi] - users.first
    imported = plants.crm_import_us[rng.integers(0, len(plants.crm_import_us), len(tested))]
    imported = np.where(imported >= users.registered_us[tested], imported,
                        _uniform_after(rng, users.registered_us[tested], end))
    parts.append(_link_part(_ID["email"], pa.array([TEST_EMAIL] * len(tested), pa.string()),
                            _ID["mobile"], _take(users.mobile_clean, tested), SRC_CRM, imported))

    left_type = np.concatenate([p.left_type for p in parts])
    right_type = np.concatenate([p.right_type for p in parts])
    source = np.concatenate([p.source for p in parts])
    observed = np.concatenate([p.observed_us for p in parts])
    left_id = pa.concat_arrays([p.left_id for p in parts])
    right_id = pa.concat_arrays([p.right_id for p in parts])

    # The same pair observed again later (another login, another sync).
    again = np.flatnonzero(rng.random(len(source)) < DUPLICATE_OBSERVATIONS)
    rows = np.concatenate([np.arange(len(source)), again])
    observed = np.concatenate([observed, _uniform_after(rng, observed[again], end)])
    order = rows[np.argsort(observed, kind="stable")]
    observed = np.sort(observed, kind="stable")

    m = len(order)
    link_id = _numbered("L", counters.links + 1 + np.arange(m), LINK_ID_DIGITS)
    counters.links += m
    return pa.Table.from_arrays(
        [
            link_id,
            _take(_text(ID_TYPES), left_type[order]),
            _take(left_id, order),
            _take(_text(ID_TYPES), right_type[order]),
            _take(right_id, order),
            _take(_text(SOURCES), source[order]),
            _timestamps(observed),
        ],
        schema=arrow_schema(RAW_TABLES["identity_links"]),
    )


# --------------------------------------------------------------------------------------------
# Behaviour events
# --------------------------------------------------------------------------------------------


@dataclass
class _Events:
    """Events as codes; ``user`` is a local user index, or -1 - anonymous device index."""

    user: np.ndarray
    type: np.ndarray
    channel: np.ndarray
    at_us: np.ndarray
    obj: np.ndarray  # code in OBJECT_ATTRIBUTES
    obj_index: np.ndarray  # product, category, brand or page index
    count: np.ndarray
    amount: np.ndarray  # NaN = null

    @staticmethod
    def concat(parts: list[_Events]) -> _Events:
        return _Events(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("user", "type", "channel", "at_us", "obj", "obj_index",
                                   "count", "amount")))


def _objects(rng: np.random.Generator, types: np.ndarray, category: np.ndarray,
             catalogue: _Catalogue) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object kind, object index and product (or -1) for browsing events of the given types,
    picking products and categories from ``category``."""
    n = len(types)
    shares = np.asarray([OBJECT_SHARES.get(t, (1.0, 0.0, 0.0, 0.0)) for t in EVENT_TYPES])
    obj = _choose_by_row(rng, shares, types)
    product = catalogue.sample(rng, category)
    pages = np.where(types == _EV["login"], _choose(rng, LOGIN_PAGE_SHARES, n),
                     rng.integers(1, len(PAGES), n))
    index = np.select(
        [obj == _OBJ["product"], obj == _OBJ["category"], obj == _OBJ["brand"]],
        [product, category, catalogue.brand[product]], pages)
    return obj, index, np.where(obj == _OBJ["product"], product, -1)


def _browse_events(rng: np.random.Generator, users: _Users, calendar: _Calendar,
                   catalogue: _Catalogue) -> _Events:
    lo, hi = users.active_from_us, users.active_until_us
    expected = users.browse_rate / YEAR_DAYS * calendar.weight_between(calendar.event_cum, lo, hi)
    owner = np.repeat(np.arange(users.n), rng.poisson(expected))
    n = len(owner)
    at = calendar.sample(rng, calendar.event_cum, lo[owner], hi[owner])
    names = list(BROWSE_TYPE_SHARES)
    types = np.asarray([_EV[t] for t in names])[_choose(rng, list(BROWSE_TYPE_SHARES.values()),
                                                        n)]
    channel = np.where(rng.random(n) < CHANNEL_LOYALTY, users.channel[owner],
                       _choose(rng, EVENT_CHANNEL_SHARES, n))
    pick = rng.random(n)
    category = np.where(pick < FAVOURITE_PICK[0], users.fav1[owner],
                        np.where(pick < sum(FAVOURITE_PICK), users.fav2[owner],
                                 _choose(rng, CATEGORY_SHARES, n)))
    obj, index, product = _objects(rng, types, category, catalogue)
    count = np.where(types == _EV["view"], 1 + _choose(rng, VIEW_COUNT_SHARES, n),
                     np.where(types == _EV["add_to_cart"], 1 + _choose(rng, QUANTITY_SHARES, n),
                              1))
    amount = np.where(types == _EV["add_to_cart"],
                      np.round(catalogue.price[np.maximum(product, 0)] * count, 2), np.nan)
    return _Events(owner, types, channel, at, obj, index, count, amount)


def _order_events(rng: np.random.Generator, users: _Users, orders: _Orders) -> list[_Events]:
    """The purchase event of every paid line, and the view / add_to_cart before online lines."""
    line_at = orders.at_us[orders.line_order]
    line_user = orders.owner[orders.line_order]
    line_channel = orders.channel[orders.line_order]
    product = np.full(len(line_at), _OBJ["product"])

    paid = orders.status[orders.line_order] == _ST["paid"]
    purchase = _Events(line_user[paid], np.full(int(paid.sum()), _EV["purchase"]),
                       line_channel[paid], line_at[paid], product[paid], orders.item[paid],
                       orders.quantity[paid], orders.amount[paid])

    online = line_channel != _CH["store"]
    n = len(line_at)
    cart_lead = (rng.exponential(FUNNEL_CART_LEAD_MEAN_S, n)).astype(np.int64) * SECOND_US
    view_lead = cart_lead + (rng.exponential(FUNNEL_VIEW_LEAD_MEAN_S, n)).astype(np.int64) \
        * SECOND_US
    floor = users.active_from_us[line_user]  # a lead that reaches before that is dropped
    carted = online & (rng.random(n) < FUNNEL_ADD_TO_CART) & (line_at - cart_lead >= floor)
    viewed = online & (rng.random(n) < FUNNEL_VIEW) & (line_at - view_lead >= floor)
    cart = _Events(line_user[carted], np.full(int(carted.sum()), _EV["add_to_cart"]),
                   line_channel[carted], (line_at - cart_lead)[carted],
                   product[carted], orders.item[carted], orders.quantity[carted],
                   orders.amount[carted])
    views = 1 + _choose(rng, VIEW_COUNT_SHARES, n)
    view = _Events(line_user[viewed], np.full(int(viewed.sum()), _EV["view"]),
                   line_channel[viewed], (line_at - view_lead)[viewed],
                   product[viewed], orders.item[viewed], views[viewed],
                   np.full(int(viewed.sum()), np.nan))
    return [purchase, cart, view]


def _anonymous_events(rng: np.random.Generator, n_events: int, n_devices: int,
                      calendar: _Calendar, catalogue: _Catalogue) -> _Events:
    device = (n_devices * rng.random(n_events) ** 2).astype(np.int64)  # a few busy devices
    types = _choose(rng, ANONYMOUS_TYPE_SHARES, n_events)
    at = calendar.sample(rng, calendar.event_cum, np.full(n_events, calendar.start_us),
                         np.full(n_events, calendar.end_us))
    obj, index, product = _objects(rng, types, _choose(rng, CATEGORY_SHARES, n_events), catalogue)
    count = np.where(types == _EV["view"], 1 + _choose(rng, VIEW_COUNT_SHARES, n_events), 1)
    amount = np.where(types == _EV["add_to_cart"],
                      np.round(catalogue.price[np.maximum(product, 0)] * count, 2), np.nan)
    return _Events(-1 - device, types, np.full(n_events, _CH["app"]), at, obj, index, count,
                   amount)


def _behavior_events_table(rng: np.random.Generator, users: _Users, orders: _Orders,
                           ident: _Identities, plants: _Plants, calendar: _Calendar,
                           catalogue: _Catalogue, counters: _Counters) -> pa.Table:
    browse = _browse_events(rng, users, calendar, catalogue)
    n_anon_devices = max(1, round(users.n * ANONYMOUS_DEVICES_PER_USER))
    anonymous = _anonymous_events(rng, int(rng.poisson(ANONYMOUS_SHARE * len(browse.user))),
                                  n_anon_devices, calendar, catalogue)
    ev = _Events.concat([browse, *_order_events(rng, users, orders), anonymous])
    order = np.argsort(ev.at_us, kind="stable")
    ev = _Events(*(getattr(ev, f)[order] for f in ("user", "type", "channel", "at_us", "obj",
                                                   "obj_index", "count", "amount")))
    n = len(ev.user)

    # Who the event is keyed by: pool = customer ids, devices, openids, anonymous devices.
    anon_types = np.asarray(DEVICE_TYPES)[_choose(rng, DEVICE_TYPE_PROBS, n_anon_devices)]
    anon_ids = _device_ids(rng, anon_types, "35",
                           counters.anonymous + np.arange(n_anon_devices), plants)
    counters.anonymous += n_anon_devices
    known = ev.user >= 0
    user = np.maximum(ev.user, 0)
    keyable = known & (ev.type != _EV["purchase"])
    by_device = (keyable & (ev.channel == _CH["app"]) & (ident.device_count[user] > 0)
                 & (rng.random(n) < DEVICE_KEYED_APP))
    device = ident.device_start[user] + (rng.random(n) < 0.5) * (ident.device_count[user] - 1)
    device = np.clip(device, 0, max(len(ident.device_id) - 1, 0))
    by_openid = (keyable & (ev.channel == _CH["mini_program"]) & (ident.openid_of[user] >= 0)
                 & (rng.random(n) < OPENID_KEYED_MINI))
    n_dev, n_open = len(ident.device_id), len(ident.openid)
    pool = pa.concat_arrays([users.customer_id, ident.device_id, ident.openid, anon_ids])
    key = np.select([~known, by_device, by_openid],
                    [users.n + n_dev + n_open + (-1 - ev.user), users.n + device,
                     users.n + n_dev + ident.openid_of[user]], user)
    key_type = np.select(
        [~known, by_device, by_openid],
        [anon_types[np.maximum(-1 - ev.user, 0)],
         ident.device_type[device] if n_dev else np.zeros(n, np.int64),
         np.full(n, _ID["openid"])], np.full(n, _ID["member_id"]))

    # What it was about: pool = product names, categories, brands, pages.
    values = pa.concat_arrays([catalogue.name, _text(CATEGORIES), catalogue.brand_names,
                               _text(PAGES)])
    offset = np.asarray([0, catalogue.size, catalogue.size + len(CATEGORIES),
                         catalogue.size + len(CATEGORIES) + len(catalogue.brand_names)])
    is_product = ev.obj == _OBJ["product"]
    item = catalogue.item_id.take(pa.array(np.where(is_product, ev.obj_index, 0),
                                           mask=~is_product))

    event_id = _numbered("E", counters.events + 1 + np.arange(n), EVENT_ID_DIGITS)
    counters.events += n
    return pa.Table.from_arrays(
        [
            event_id,
            _take(_text(ID_TYPES), key_type),
            _take(pool, key),
            _take(_text(EVENT_TYPES), ev.type),
            _take(_text(CHANNELS), ev.channel),
            _timestamps(ev.at_us),
            _take(_text(OBJECT_ATTRIBUTES), ev.obj),
            _take(values, offset[ev.obj] + ev.obj_index),
            item,
            pa.array(ev.count.astype(np.int64)),
            _money(ev.amount),
        ],
        schema=arrow_schema(RAW_TABLES["behavior_events"]),
    )


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _chunk_tables(index: int, first: int, n: int, config: DemoConfig, calendar: _Calendar,
                  catalogue: _Catalogue, plants: _Plants,
                  counters: _Counters) -> dict[str, pa.Table]:
    rng = _rng(config.seed, STREAM_CHUNK, index)
    users = _users(rng, first, n, config, calendar, plants)
    orders = _orders(rng, users, calendar, catalogue, counters)
    paid = orders.status == _ST["paid"]
    spend = np.bincount(orders.owner[paid], weights=orders.total[paid], minlength=n)
    ident = _identities(rng, users, plants, counters)
    return {
        "customers": _customers_table(rng, users, plants, spend * YEAR_DAYS / config.days,
                                      config),
        "orders": _orders_table(users, orders),
        "order_items": _order_items_table(orders, catalogue),
        "behavior_events": _behavior_events_table(rng, users, orders, ident, plants, calendar,
                                                  catalogue, counters),
        "identity_links": _identity_links_table(rng, users, ident, plants, calendar, counters),
    }


def generate(out_dir: pathlib.Path, config: DemoConfig,
             progress: Progress | None = None) -> dict[str, int]:
    """Writes out_dir/<table>.parquet for every table in RAW_TABLES (declared_only tables as
    empty files with the right schema) and out_dir/manifest.json (the config and row counts).
    Returns row counts per table. progress(stage, done_users, total_users) is called with stage
    "products" once the catalogue is written and "users" after every chunk."""
    config.validate()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calendar = _Calendar.build(config)
    catalogue = _products(config, calendar)
    plants = _Plants.build(config, calendar)
    counters = _Counters()
    counts = {name: 0 for name in RAW_TABLES}

    writers = {name: pq.ParquetWriter(out_dir / f"{name}.parquet", arrow_schema(table))
               for name, table in RAW_TABLES.items()}
    try:
        writers["products"].write_table(catalogue.table)
        counts["products"] = catalogue.table.num_rows
        if progress:
            progress("products", 0, config.users)
        for index, first in enumerate(range(0, config.users, config.chunk_users)):
            n = min(config.chunk_users, config.users - first)
            tables = _chunk_tables(index, first, n, config, calendar, catalogue, plants,
                                   counters)
            for name, table in tables.items():
                writers[name].write_table(table)
                counts[name] += table.num_rows
            if progress:
                progress("users", first + n, config.users)
    finally:
        for writer in writers.values():
            writer.close()

    manifest = {
        "generator": "openaudience.demo.generator",
        "config": {**asdict(config), "end_date": config.end_date.isoformat()},
        "row_counts": counts,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic demo data as Parquet.")
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--users", type=int, default=DemoConfig.users)
    parser.add_argument("--days", type=int, default=DemoConfig.days)
    parser.add_argument("--seed", type=int, default=DemoConfig.seed)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date.today(),
                        help="exclusive end of the data (default: today)")
    parser.add_argument("--chunk-users", type=int, default=DemoConfig.chunk_users)
    args = parser.parse_args(argv)
    config = DemoConfig(users=args.users, days=args.days, seed=args.seed,
                        end_date=args.end_date, chunk_users=args.chunk_users)
    started = time.perf_counter()

    def report(stage: str, done: int, total: int) -> None:
        print(f"\r{stage}: {done:,}/{total:,} users ({time.perf_counter() - started:.0f}s)",
              end="", file=sys.stderr, flush=True)

    counts = generate(args.out_dir, config, report)
    print(file=sys.stderr)
    for name, rows in counts.items():
        print(f"{name:18} {rows:>12,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
