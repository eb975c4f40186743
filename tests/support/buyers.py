"""Shop data with no buy-till-you-die structure, for judging the repurchase model where BG/NBD's
assumptions (Poisson buying, a constant chance of dropping out after each purchase) do not hold:
customers, products, orders and order lines only (no behaviour events, as a shop that loads its
orders first has), written as CSV files for `load_file`.

Four kinds of buyer, over two years:

- **habit**: every I days (I from 14 to 75) give or take two days, from their first purchase to
  the end, never dropping out; a regular who bought yesterday will not buy again tomorrow;
- **seasonal**: once a year, within a week of their own day of the year (a birthday, a festival),
  some twice a year;
- **category**: restocks of one consumable at its category's period (give or take 30 %), and
  durables (bought once, never again);
- **noise**: a few purchases at random times.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

CONSUMABLES = {"coffee": 21, "pet_food": 30, "skincare": 45, "razor": 60}  # category: period (days)
DURABLES = ("electronics", "furniture", "luggage")
SEASONAL = ("gifts", "festival")
CHANNELS = ("app", "web", "mini_program", "store")
END = dt.date(2026, 6, 30)  # the last day of the data


def generate(folder: Path, people: int = 12_000, days: int = 730, end: dt.date = END,
             seed: int = 3) -> dict[str, Path]:
    """Write customers.csv, products.csv, orders.csv and order_items.csv into `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = end - dt.timedelta(days=days - 1)
    categories = [*CONSUMABLES, *DURABLES, *SEASONAL]
    products = [(f"B{i:04d}", cat) for i, cat in enumerate(c for c in categories for _ in range(8))]
    by_category: dict[str, list[str]] = {}
    for item, cat in products:
        by_category.setdefault(cat, []).append(item)
    price = {item: round(float(rng.uniform(20, 900 if cat in DURABLES else 200)), 2)
             for item, cat in products}

    purchases: list[tuple[int, int, str]] = []  # (person, day index, item)

    def buy(person: int, day: int, category: str) -> None:
        if 0 <= day < days:
            purchases.append((person, day, str(rng.choice(by_category[category]))))

    kinds = rng.choice(["habit", "seasonal", "category", "noise"], people, p=[0.3, 0.25, 0.3, 0.15])
    for person, kind in enumerate(kinds):
        if kind == "habit":
            interval = int(rng.integers(14, 76))
            day = int(rng.integers(0, days // 2))
            category = str(rng.choice(list(CONSUMABLES)))
            while day < days:
                buy(person, day, category)
                day += interval + int(rng.integers(-2, 3))
        elif kind == "seasonal":
            anchors = [int(rng.integers(0, 365))]
            if rng.random() < 0.3:
                anchors.append((anchors[0] + int(rng.integers(120, 240))) % 365)
            first_year = int(rng.integers(0, 2))
            for year in range(first_year, days // 365 + 1):
                for anchor in anchors:
                    buy(person, year * 365 + anchor + int(rng.integers(-7, 8)), str(rng.choice(SEASONAL)))
        elif kind == "category":
            day = int(rng.integers(0, days - 60))
            if rng.random() < 0.45:  # a durable: bought once
                buy(person, day, str(rng.choice(DURABLES)))
            else:
                category = str(rng.choice(list(CONSUMABLES)))
                period = CONSUMABLES[category]
                stop = day + int(rng.integers(90, days))  # they may stop restocking
                while day < min(days, stop):
                    buy(person, day, category)
                    day += max(3, int(period * rng.uniform(0.7, 1.3)))
        else:
            for day in rng.integers(0, days, int(rng.integers(1, 4))):
                buy(person, int(day), str(rng.choice(categories)))

    paths = {name: folder / f"{name}.csv" for name in ("customers", "products", "orders", "order_items")}
    bought = sorted({p for p, _, _ in purchases})
    with paths["customers"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "mobile", "email", "gender", "birth_date", "city", "member_level",
                    "registered_at"])
        for person in bought:
            w.writerow([f"C{person:06d}", f"139{person:08d}", f"c{person}@example.com",
                        ("male", "female", "unknown")[person % 3], "1990-01-01", "Shanghai", "none",
                        f"{start - dt.timedelta(days=1)} 09:00:00"])
    with paths["products"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "name", "category", "brand", "price", "season", "listed_at"])
        for item, cat in products:
            w.writerow([item, f"{cat} {item}", cat, "house", f"{price[item]:.2f}", "all",
                        f"{start - dt.timedelta(days=30)} 09:00:00"])
    with paths["orders"].open("w", newline="") as f, paths["order_items"].open("w", newline="") as g:
        orders, lines = csv.writer(f), csv.writer(g)
        orders.writerow(["order_id", "customer_id", "ordered_at", "channel", "status", "total_amount"])
        lines.writerow(["order_item_id", "order_id", "item_id", "quantity", "unit_price", "amount"])
        for n, (person, day, item) in enumerate(sorted(purchases)):
            at = dt.datetime.combine(start + dt.timedelta(days=day), dt.time(10)) + dt.timedelta(
                minutes=int(rng.integers(0, 600)))
            quantity = int(rng.integers(1, 3))
            amount = round(price[item] * quantity, 2)
            status = "paid" if rng.random() > 0.03 else "refunded"
            orders.writerow([f"O{n:08d}", f"C{person:06d}", at.strftime("%Y-%m-%d %H:%M:%S"),
                             CHANNELS[person % len(CHANNELS)], status, f"{amount:.2f}"])
            lines.writerow([f"L{n:08d}", f"O{n:08d}", item, quantity, f"{price[item]:.2f}", f"{amount:.2f}"])
    return paths
