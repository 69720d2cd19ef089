"""Build (once) and cache the benchmark databases.

A dataset is a Serva database made with the project's own schema (`serva.db.init_schema`) and
then filled directly through sqlite3 in a few big transactions (executemany, no per-row
Python-level ORM work), so 1,000,000 orders take well under a minute. The file is cached in
bench/data/ under a name made of the schema revision, this generator's version and the sizes;
a run copies it before mutating it.

Money is consistent with the rules the server enforces, so `serva audit` passes on a fresh
dataset: every account gets one top-up equal to its final balance plus its net charges, every
order one `charge` ledger row, and every Partial/Canceled order one `refund` row.

Sidecar files next to the database (read by the wrk scripts):
  <name>.keys      one raw API key per line, line i = account i (10,000 lines)
  <name>.status    "key ORD-a,ORD-b,..." for accounts that own orders (up to 100 ids each)
  <name>.services  ids of the plain link services `add` may use, one per line
"""
import base64
import hashlib
import json
import os
import random
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from serva import db as serva_db  # noqa: E402
from serva import migrations  # noqa: E402

GENERATOR_VERSION = 2
DATA_DIR = os.path.join(HERE, "data")
MICRO = 1_000_000
ORDER_NUMBER_BASE = 100_000
ACCOUNT_STRIDE = 7919  # prime, coprime with the account count: order k -> account permutation
FINAL_BALANCE = 1_000 * MICRO  # every account ends with 1000 USD: room for thousands of bench orders
STATUS_LINES = 2_000  # accounts listed in the .status sidecar
EPOCH = 1_700_000_000  # history starts here; orders are spread over ~ a year


def raw_key(i: int) -> str:
    """A deterministic key of the production shape (sk_ + 43 url-safe characters)."""
    digest = hashlib.sha256(b"serva-bench-key-%d" % i).digest()
    return "sk_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def dataset_name(accounts: int, services: int, orders: int) -> str:
    return (f"serva-{migrations.head()}-g{GENERATOR_VERSION}"
            f"-a{accounts}-v{services}-o{orders}")


def paths(name: str) -> dict:
    base = os.path.join(DATA_DIR, name)
    return {"db": base + ".sqlite", "keys": base + ".keys", "status": base + ".status",
            "service_ids": base + ".services", "meta": base + ".json"}


def account_of(k: int, accounts: int) -> int:
    """Order k (1-based) belongs to this account: each block of `accounts` consecutive orders
    visits every account once, so histories interleave in time like real traffic."""
    return (k - 1) * ACCOUNT_STRIDE % accounts + 1


def _services(count: int, rng: random.Random, stamp: int):
    """Mostly plain link services, plus packages, comment lists and manual-field services."""
    rows, link_ids = [], []
    categories = ["Instagram", "TikTok", "YouTube", "Facebook", "Twitter", "Telegram", "Spotify",
                  "Twitch", "Discord", "SoundCloud", "LinkedIn", "Pinterest", "Reddit", "Threads",
                  "Snapchat", "Quora", "Kick", "VK", "Website Traffic", "Game Top-up"]
    for sid in range(1, count + 1):
        category = categories[sid % len(categories)]
        bucket = sid % 25
        fields = []
        if bucket == 0:
            kind, typ, low, high = "package", "Package", 1, 1
            rate = rng.randrange(1, 50) * MICRO
        elif bucket == 1:
            kind, typ, low, high = "lines", "Custom Comments", 1, 1000
            rate = rng.randrange(5, 30) * MICRO
            fields = [{"name": "comments", "label": "Comments (one per line)", "required": True,
                       "lines": True}]
        elif bucket == 2:
            kind, typ, low, high = "fields", "Manual", 10, 10_000
            rate = rng.randrange(5, 30) * MICRO
            fields = [{"name": "player_id", "label": "Player ID", "required": True},
                      {"name": "server_id", "label": "Server ID", "required": False}]
        else:
            kind, typ, low, high = "default", "Default", 10, 1_000_000
            rate = rng.randrange(10_000, 5 * MICRO)  # 0.01 .. 5 USD per 1000
            link_ids.append(sid)
        rows.append((sid, f"{category} service #{sid} - real, fast start", category, typ, kind,
                     rate, low, high, json.dumps(fields), 30 if sid % 3 == 0 else 0, sid % 4 == 0,
                     sid % 50 != 49, stamp))
    return rows, link_ids


def build(accounts: int = 10_000, services: int = 500, orders: int = 1_000_000,
          force: bool = False, quiet: bool = False) -> dict:
    """Make the dataset unless it is cached; returns its paths (plus its metadata)."""
    name = dataset_name(accounts, services, orders)
    p = paths(name)
    if not force and all(os.path.exists(p[k]) for k in ("db", "keys", "status", "service_ids", "meta")):
        with open(p["meta"]) as handle:
            return {**p, **json.load(handle)}
    os.makedirs(DATA_DIR, exist_ok=True)
    started = time.perf_counter()
    tmp = p["db"] + ".building"
    for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    engine = serva_db.make_engine(f"sqlite:///{tmp}")
    serva_db.init_schema(engine)  # the project's own DDL and revision stamp
    engine.dispose()

    rng = random.Random(20240601 + orders)
    con = sqlite3.connect(tmp, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")  # a throwaway build: no journal, no fsync
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    con.execute("BEGIN")
    # The rows come with their final balances, written directly (no trigger moves a balance:
    # at run time every change is ledger.post).
    service_rows, link_ids = _services(services, rng, EPOCH)
    con.executemany("INSERT INTO services (id, name, category, type, kind, rate, min_quantity, "
                    "max_quantity, fields_json, refill_days, cancel, active, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", service_rows)
    rates = {row[0]: row[5] for row in service_rows}
    active_link_ids = [sid for sid in link_ids if service_rows[sid - 1][11]]

    account_rows, key_rows, discounts = [], [], {}
    for a in range(1, accounts + 1):
        discount = (a % 5) * 250 if a % 3 == 0 else 0  # a third of the accounts get 2.5..10% off
        discounts[a] = discount
        account_rows.append((a, f"partner{a}@bench.example", "approved", FINAL_BALANCE, discount,
                             EPOCH))
        key = raw_key(a)
        # keys in service for a while: last used (long) before the benchmark starts
        key_rows.append((a, a, hashlib.sha256(key.encode()).hexdigest(), key[:10], EPOCH,
                         EPOCH + 3600 * (a % 5000)))
    con.executemany("INSERT INTO accounts (id, email, api_access, balance, discount_bp, created_at) "
                    "VALUES (?,?,?,?,?,?)", account_rows)
    con.executemany("INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at, "
                    "last_used_at) VALUES (?,?,?,?,?,?)", key_rows)
    # Custom rates for one account in 20: five services each.
    custom = {}
    for a in range(20, accounts + 1, 20):
        for sid in rng.sample(link_ids, 5):
            custom[(a, sid)] = max(1, rates[sid] * 8 // 10)
    con.executemany("INSERT INTO service_rates (account_id, service_id, rate) VALUES (?,?,?)",
                    [(a, sid, rate) for (a, sid), rate in custom.items()])

    # Orders and their ledger rows, in chunks so memory stays small.
    net = [0] * (accounts + 1)
    span = 365 * 24 * 3600
    active_from = orders - max(1, orders // 50)  # the newest 2% are still being worked on
    ledger_id = accounts  # ids 1..accounts are reserved for the top-ups (inserted last)
    chunk = 50_000
    for start in range(1, orders + 1, chunk):
        order_rows, ledger_rows = [], []
        for k in range(start, min(orders, start + chunk - 1) + 1):
            a = account_of(k, accounts)
            sid = link_ids[(k * 31 + a) % len(link_ids)]
            quantity = 100 * (1 + k % 50)
            rate = custom.get((a, sid))
            if rate is None:
                rate = (rates[sid] * (10_000 - discounts[a]) * 2 + 10_000) // 20_000
            charge = (rate * quantity * 2 + 1000) // 2000
            created = EPOCH + span * k // orders
            target = f"https://www.instagram.com/p/bench{k}"
            target_key = hashlib.sha256(f"{sid}\n{target}".encode()).hexdigest()
            refunded, remains, start_count = 0, 0, 1000 + k % 9000
            if k > active_from:
                status = ("Pending", "In progress", "Processing")[k % 3]
                remains = quantity if status == "Pending" else quantity // 2
                start_count = None if status == "Pending" else start_count
            elif k % 33 == 0:
                status, remains = "Partial", quantity // 4
                refunded = (charge * remains * 2 + quantity) // (2 * quantity)
            elif k % 50 == 0:
                status, remains, refunded = "Canceled", quantity, charge
            else:
                status = "Completed"
            order_rows.append((k, a, sid, target, target_key, quantity, charge, refunded, status,
                               start_count, remains, created, created + 3600))
            ledger_id += 1
            ledger_rows.append((ledger_id, a, -charge, "charge", k,
                                f"order ORD-{k + ORDER_NUMBER_BASE}", created))
            if refunded:
                ledger_id += 1
                ledger_rows.append((ledger_id, a, refunded, "refund", k,
                                    f"{status.lower()} order ORD-{k + ORDER_NUMBER_BASE}",
                                    created + 3600))
            net[a] += charge - refunded
        con.executemany("INSERT INTO orders (id, account_id, service_id, target, target_key, "
                        "quantity, charge, refunded, status, start_count, remains, created_at, "
                        "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", order_rows)
        con.executemany("INSERT INTO ledger (id, account_id, amount, kind, order_id, note, "
                        "created_at) VALUES (?,?,?,?,?,?,?)", ledger_rows)
    con.executemany("INSERT INTO ledger (id, account_id, amount, kind, order_id, note, created_at) "
                    "VALUES (?,?,?,?,?,?,?)",
                    [(a, a, FINAL_BALANCE + net[a], "topup", None, "bench top-up", EPOCH)
                     for a in range(1, accounts + 1)])
    con.execute("COMMIT")
    con.execute("PRAGMA journal_mode=WAL")  # what the server expects (it sets it too)
    con.close()

    with open(p["keys"], "w") as handle:
        handle.writelines(raw_key(a) + "\n" for a in range(1, accounts + 1))
    owned = {}
    for k in range(1, orders + 1):
        a = account_of(k, accounts)
        if len(owned) < STATUS_LINES or a in owned:
            ids = owned.setdefault(a, [])
            if len(ids) < 100:
                ids.append(f"ORD-{k + ORDER_NUMBER_BASE}")
    with open(p["status"], "w") as handle:
        handle.writelines(f"{raw_key(a)} {','.join(ids)}\n" for a, ids in owned.items())
    with open(p["service_ids"], "w") as handle:
        handle.writelines(f"{sid}\n" for sid in active_link_ids)
    meta = {"name": name, "accounts": accounts, "services": services, "orders": orders,
            "ledger_rows": ledger_id, "build_seconds": round(time.perf_counter() - started, 1)}
    os.replace(tmp, p["db"])
    with open(p["meta"], "w") as handle:
        json.dump(meta, handle)
    if not quiet:
        print(f"built {name} in {meta['build_seconds']} s", file=sys.stderr)
    return {**p, **meta}


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    print(json.dumps(build(args.accounts, args.services, args.orders, force=args.force)))
