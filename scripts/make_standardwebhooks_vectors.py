#!/usr/bin/env python3
"""Generate Standard Webhooks signature vectors with the independent `standardwebhooks` package.

The Rust verifier is checked against these, so the signatures must come from a different
implementation than ours: the reference Python library (`pip install standardwebhooks`).

Each case holds a `whsec_` secret, a message id, a unix timestamp, a body (UTF-8 text, often
with non-ASCII characters) and the `webhook-signature` header value. Some headers carry several
entries, as during a key rotation: a signature by another secret and/or an entry of another
version, in random order; the case's secret signed exactly one `v1` entry.

Usage: make_standardwebhooks_vectors.py [--count N] [--seed S]   (JSON on stdout)
"""

import argparse
import base64
import json
import random
import string
import sys
from datetime import datetime, timezone
from importlib import metadata

try:
    from standardwebhooks.webhooks import Webhook
except ImportError:
    print("the `standardwebhooks` package is not installed (pip install standardwebhooks)", file=sys.stderr)
    sys.exit(3)

UNICODE_SAMPLES = [
    "Grüße aus Köln",
    "produit – fiche technique « FR »",
    "数据表",
    "Ελληνικά",
    "😀🚀",
    "e\u0301",  # combining accent
    "line\nbreak\ttab",
    "dots.in.the.body",
    "\u00a0non-breaking space",
    "quote \" and backslash \\",
]


def random_secret(rng: random.Random) -> str:
    # The spec asks for 24 to 64 random bytes.
    raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(24, 64)))
    return "whsec_" + base64.b64encode(raw).decode("ascii")


def random_id(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "_-"
    return "msg_" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))


def random_text(rng: random.Random) -> str:
    parts = [rng.choice(UNICODE_SAMPLES) for _ in range(rng.randint(0, 4))]
    parts.append("".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(0, 12))))
    rng.shuffle(parts)
    return " ".join(parts)


def random_body(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return ""
    if kind == 1:
        return random_text(rng)
    event = {
        "event": rng.choice(["moduleobject_create", "moduleobject_modify", "moduleobject_delete"]),
        "module": rng.choice(["product", "file", "collection"]),
        "object_id": str(rng.randint(1, 10**12)),
        "name": random_text(rng),
    }
    if kind == 2:
        return json.dumps(event, ensure_ascii=False)
    return json.dumps([event, {"note": random_text(rng)}], ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=body)


def make_case(rng: random.Random) -> dict:
    secret = random_secret(rng)
    msg_id = random_id(rng)
    timestamp = rng.randint(1_000_000_000, 4_000_000_000)
    body = random_body(rng)
    entries = [sign(secret, msg_id, timestamp, body)]
    if rng.random() < 0.3:
        entries.append(sign(random_secret(rng), msg_id, timestamp, body))
    if rng.random() < 0.2:
        entries.append("v1a," + base64.b64encode(bytes(rng.getrandbits(8) for _ in range(64))).decode("ascii"))
    rng.shuffle(entries)
    return {
        "secret": secret,
        "msg_id": msg_id,
        "timestamp": timestamp,
        "body": body,
        "signature": " ".join(entries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64, help="number of cases")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible output")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cases = [make_case(rng) for _ in range(args.count)]
    # The secrets are random per case and exist only in this test data.
    generator = f"standardwebhooks {metadata.version('standardwebhooks')} (PyPI)"
    json.dump({"generator": generator, "seed": args.seed, "cases": cases}, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
