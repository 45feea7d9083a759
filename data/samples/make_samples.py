"""Regenerate the sample inputs in data/samples/ (deterministic: same bytes every run).

    python data/samples/make_samples.py

Writes reviews.jsonl + reviews.parquet (200 product reviews in six languages),
tickets.csv (support tickets, with commas, quotes and newlines inside fields),
images.jsonl (an image-URL column and a local-image column) with images/*.png,
and conversations.jsonl (a whole conversation per row, for ``messages: "{{ … }}"``).
"""

from __future__ import annotations

import csv
import json
import random
import struct
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
RNG = random.Random(20240601)

PRODUCTS = {
    "Aeropress Go Travel Coffee Maker": "kitchen",
    "Anker 737 Power Bank": "electronics",
    "Bose QuietComfort 45": "electronics",
    "Brita Standard Pitcher": "kitchen",
    "Cast Iron Skillet 10in": "kitchen",
    "Dyson V8 Cordless Vacuum": "home",
    "Fitbit Charge 6": "electronics",
    "Hydro Flask 32 oz": "outdoors",
    "IKEA Markus Office Chair": "home",
    "Kindle Paperwhite (11th gen)": "electronics",
    "Lodge Dutch Oven 6qt": "kitchen",
    "Logitech MX Master 3S": "electronics",
    "Moleskine Classic Notebook": "office",
    "Osprey Daylite Backpack": "outdoors",
    "Philips Hue Starter Kit": "home",
    "Sony WH-1000XM5": "electronics",
    "Stanley Quencher Tumbler": "outdoors",
    "Theragun Mini": "health",
    "Uniqlo Ultra Light Down Jacket": "apparel",
    "Yeti Rambler 20 oz": "outdoors",
}

PRAISE = [
    "Works exactly as described and the build quality is excellent.",
    "I've used it every day for three weeks and it still feels brand new.",
    "Setup took five minutes, no app account required.",
    "Looks even better in person than in the photos.",
    "Worth every penny, I already ordered a second one for my sister.",
    "Much quieter than the one it replaced.",
    "Shipping was fast and the packaging was mostly recyclable.",
    "The materials feel premium and nothing rattles.",
]
COMPLAINTS = [
    "Stopped working after ten days and support never answered.",
    "The lid leaks if you tip it even slightly.",
    "Way smaller than the photos suggest.",
    "Arrived with a cracked corner and a missing cable.",
    "The finish started peeling within a month.",
    "Smells strongly of plastic, even after a week of airing out.",
    "Returned it; the stitching came apart on the second use.",
    "Overpriced for what you get, honestly.",
]
MIXED = [
    "Does the job, but the instructions are useless.",
    "Good value, although the color is duller than on the website.",
    "Comfortable for an hour, then it starts to pinch.",
    "Great when it works, but it is fussy to clean.",
    "Fine for the price. Nothing special.",
    "The main feature is great, the accessories feel cheap.",
]
#: a sentence only products of that category get, so reviews stay plausible
BY_CATEGORY = {
    "electronics": {
        "pos": "Battery life is better than advertised, easily a full week.",
        "neg": "The app crashes every time I try to pair it.",
    },
    "kitchen": {
        "pos": "Cleans up in seconds and heats evenly.",
        "neg": "It rusted after the first wash even though I dried it right away.",
    },
    "outdoors": {
        "pos": "Kept my drink cold through a whole day at the beach.",
        "neg": "The strap buckle snapped on the first hike.",
    },
}
OTHER_LANGUAGES = {
    "de": [
        (5, "Top Qualität, schnelle Lieferung. Würde ich jederzeit wieder kaufen."),
        (4, "Sehr gut verarbeitet, nur die Anleitung ist etwas knapp."),
        (2, "Nach zwei Wochen kaputt gegangen. Schade ums Geld."),
        (3, "Ganz okay, aber für den Preis hätte ich mehr erwartet."),
    ],
    "fr": [
        (5, "Excellent produit, je le recommande sans hésiter !"),
        (1, "Reçu cassé, et le service client ne répond pas."),
        (4, "Très pratique au quotidien, un peu bruyant quand même."),
        (3, "Correct sans plus. La couleur ne correspond pas à la photo."),
    ],
    "es": [
        (5, "Me encanta, funciona perfecto y llegó antes de lo previsto."),
        (2, "La batería dura muy poco, no lo volvería a comprar."),
        (4, "Buena relación calidad-precio."),
    ],
    "ja": [
        (5, "とても使いやすく、デザインも気に入っています。"),
        (1, "届いた時点で壊れていました。返品しました。"),
        (3, "値段相応だと思います。"),
    ],
    "zh": [
        (5, "质量很好,物流也很快,非常满意!"),
        (2, "用了一周就坏了,客服态度也不好。"),
        (4, "整体不错,就是包装有点简陋。"),
    ],
}
TITLES = {
    5: ["Love it", "Best purchase this year", "Exceeded expectations", "Five stars"],
    4: ["Very good", "Solid choice", "Almost perfect", "Happy with it"],
    3: ["It's okay", "Mixed feelings", "Average", "Decent but flawed"],
    2: ["Disappointed", "Not great", "Expected more"],
    1: ["Avoid", "Broke immediately", "Waste of money", "Terrible"],
}


def make_reviews(count: int = 200) -> list[dict[str, object]]:
    start = datetime(2024, 1, 3, 8, 0)
    products = list(PRODUCTS)
    rows = []
    for index in range(count):
        product = RNG.choice(products)
        lang = "en" if RNG.random() < 0.8 else RNG.choice(list(OTHER_LANGUAGES))
        if lang == "en":
            rating = RNG.choices([1, 2, 3, 4, 5], weights=[1, 1, 1.5, 3, 4])[0]
            text = _english_review(rating, product)
        else:
            rating, text = RNG.choice(OTHER_LANGUAGES[lang])
        created = start + timedelta(minutes=RNG.randrange(0, 60 * 24 * 300))
        rows.append(
            {
                "id": f"rev-{index + 1:04d}",
                "product": product,
                "category": PRODUCTS[product],
                "rating": rating,
                "title": RNG.choice(TITLES[rating]),
                "text": text,
                "lang": lang,
                "verified_purchase": RNG.random() < 0.85,
                "helpful_votes": int(RNG.paretovariate(1.5)) - 1,
                "created_at": created.isoformat(timespec="seconds"),
            }
        )
    return rows


def _english_review(rating: int, product: str) -> str:
    short = product.split(" (")[0]
    special = BY_CATEGORY.get(PRODUCTS[product], {})
    if rating >= 4:
        bank, extra = (
            [*PRAISE, special.get("pos", PRAISE[0])],
            [f"The {short} is my new favourite."],
        )
    elif rating <= 2:
        bank, extra = (
            [*COMPLAINTS, special.get("neg", COMPLAINTS[0])],
            [f"I wanted to like the {short}."],
        )
    else:
        bank, extra = MIXED + PRAISE[:2] + COMPLAINTS[:2], [f"The {short} is fine, I guess."]
    sentences = RNG.sample(bank, k=RNG.randint(1, 3))
    if RNG.random() < 0.4:
        sentences.insert(0, RNG.choice(extra))
    return " ".join(sentences)


def make_tickets(count: int = 80) -> list[dict[str, object]]:
    subjects = [
        ("Refund not received", "billing", "I returned the order on {d} and still have no refund."),
        ("Cannot log in", "account", 'The site says "invalid token" after I reset my password.'),
        ("Wrong item shipped", "shipping", "Ordered the 32 oz, got the 20 oz. Order {o}."),
        ("Package stuck in transit", "shipping", "Tracking hasn't moved since {d}, is it lost?"),
        ("Charged twice", "billing", "My card shows two charges of $49.99 for order {o}."),
        ("Feature request: dark mode", "product", "Please add dark mode to the app, my eyes hurt."),
        ("Device won't pair", "technical", "Bluetooth pairing fails on Android 14.\nTried twice."),
        ("Change shipping address", "shipping", "I moved; please ship order {o} to my new place."),
        ("Warranty claim", "technical", "The hinge broke after 8 months, still under warranty?"),
        ("Cancel subscription", "account", "Cancel my plan, effective immediately, thanks."),
    ]
    start = datetime(2024, 5, 1, 9, 0)
    rows = []
    for index in range(count):
        subject, queue, body = RNG.choice(subjects)
        created = start + timedelta(minutes=RNG.randrange(0, 60 * 24 * 30))
        order = f"#{RNG.randrange(100000, 999999)}"
        rows.append(
            {
                "ticket_id": f"{index + 1:05d}",  # leading zeros: ids must stay text
                "created_at": created.strftime("%Y-%m-%d %H:%M:%S"),
                "channel": RNG.choice(["email", "chat", "phone", "web form"]),
                "customer": f"customer{RNG.randrange(1, 400):03d}@example.com",
                "subject": subject,
                "body": body.format(d=(created - timedelta(days=9)).date(), o=order),
                "queue": queue,
                "priority": RNG.choice(["low", "normal", "normal", "high", "urgent"]),
                "order_total": round(RNG.uniform(9, 400), 2),
            }
        )
    return rows


IMAGES = {
    "red_circle.png": ((220, 40, 40), "circle"),
    "blue_stripes.png": ((40, 80, 220), "stripes"),
    "green_triangle.png": ((30, 160, 70), "triangle"),
}


def write_png(path: Path, color: tuple[int, int, int], shape: str, size: int = 48) -> None:
    """A tiny RGB PNG (a coloured shape on white), written with zlib and struct alone."""
    rows = []
    for y in range(size):
        row = bytearray([0])  # filter type 0 (none) for every scanline
        for x in range(size):
            row += bytes(color if _inside(shape, x, y, size) else (255, 255, 255))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def _inside(shape: str, x: int, y: int, size: int) -> bool:
    middle = size / 2
    if shape == "circle":
        return (x - middle) ** 2 + (y - middle) ** 2 < (size / 2.6) ** 2
    if shape == "stripes":
        return (y // 6) % 2 == 0
    return y > size / 6 and abs(x - middle) < (y - size / 6) / 1.7


def make_images() -> list[dict[str, object]]:
    base = "https://upload.wikimedia.org/wikipedia/commons/thumb"
    remote = [
        f"{base}/4/47/PNG_transparency_demonstration_1.png/280px-PNG_transparency_demonstration_1.png",
        f"{base}/3/3f/Fronalpstock_big.jpg/320px-Fronalpstock_big.jpg",
        f"{base}/a/a9/Example.jpg/320px-Example.jpg",
    ]
    rows = []
    for index, (name, (_, shape)) in enumerate(IMAGES.items()):
        rows.append(
            {
                "id": f"img-{index + 1}",
                "image_url": remote[index],
                "image_path": f"images/{name}",
                "question": f"What shape is shown, and what colour is it? (expected: {shape})",
            }
        )
    return rows


def make_conversations() -> list[dict[str, object]]:
    openers = [
        ("My order arrived damaged.", "Sorry to hear that! Could you share the order number?"),
        ("Do you ship to Canada?", "Yes, we ship to Canada; delivery takes 5-8 business days."),
        ("How do I reset my password?", "Use 'Forgot password' on the login page."),
        ("Is the jacket machine washable?", "Yes, on a gentle cycle at 30°C."),
    ]
    follow_ups = [
        "It's #482913. What happens next?",
        "And how much does shipping cost?",
        "I did that but never got the email.",
        "Can I tumble dry it too?",
    ]
    rows = []
    for index, ((ask, answer), follow) in enumerate(zip(openers, follow_ups, strict=True)):
        rows.append(
            {
                "id": f"conv-{index + 1}",
                "conversation": [
                    {"role": "user", "content": ask},
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": follow},
                ],
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    reviews = make_reviews()
    write_jsonl(HERE / "reviews.jsonl", reviews)
    pl.DataFrame(reviews).write_parquet(HERE / "reviews.parquet")
    tickets = make_tickets()
    with (HERE / "tickets.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(tickets[0]))
        writer.writeheader()
        writer.writerows(tickets)
    (HERE / "images").mkdir(exist_ok=True)
    for name, (color, shape) in IMAGES.items():
        write_png(HERE / "images" / name, color, shape)
    write_jsonl(HERE / "images.jsonl", make_images())
    write_jsonl(HERE / "conversations.jsonl", make_conversations())
    print(f"wrote {len(reviews)} reviews, {len(tickets)} tickets, {len(IMAGES)} images to {HERE}")


if __name__ == "__main__":
    main()
