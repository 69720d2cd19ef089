"""The floor: a reference for `balance` and `add`, not Serva. `make bench` serves it like the
bare endpoint and Serva (`python -m serva.serve --workers 1 --threads T reference:app`) on its
own copy of the dataset, to show how close each action is to the least a Flask endpoint must do
on Serva's schema (bench/README.md).

What it does, and nothing more: Flask's own form parsing (`request.form`), the key's sha256,
one indexed SELECT joining api_keys and accounts by key_hash on a per-thread sqlite3
connection (Serva's PRAGMAs: WAL, foreign keys, synchronous=FULL), a JSON answer with an
`x-serva-request-id` header. `add` reads the service's rate for the account in that same
SELECT, then runs an order's statements in one BEGIN IMMEDIATE transaction: the purchase-guard
upsert, the order insert (with the request id), the hand-over row when the service has a
provider, the conditional debit (refused with insufficient_balance) and its ledger row. Orders of concurrent threads are
group-committed (`grouped`). What it leaves out is Serva's own work: the key's checks (revoked,
banned, approved), rate limits, the access log, link normalization, quantity bounds, fields,
coupons, drip-feed, idempotency keys, id formats. Its orders are real: `serva audit` passes on
its database."""
import hashlib
import json
import os
import random
import sqlite3
import threading
import time

from flask import Flask, Response, request

app = Flask(__name__)
DATABASE = os.environ["SERVA_BENCH_DB"]
GUARD_WINDOW_SECONDS = 300  # Serva's default

AUTH = ("SELECT accounts.id, accounts.balance FROM api_keys "
        "JOIN accounts ON accounts.id = api_keys.account_id WHERE api_keys.key_hash = ?")
# The same lookup with the service's rate for this account (custom rate, else the list rate
# less the account's discount, rounded half-up) and its provider.
AUTH_ADD = ("SELECT accounts.id, coalesce(service_rates.rate, "
            "(services.rate * (10000 - accounts.discount_bp) + 5000) / 10000), "
            "services.id, services.provider_id FROM api_keys "
            "JOIN accounts ON accounts.id = api_keys.account_id "
            "LEFT JOIN services ON services.id = ? AND services.active "
            "LEFT JOIN service_rates ON service_rates.account_id = accounts.id "
            "AND service_rates.service_id = services.id WHERE api_keys.key_hash = ?")
GUARD = ("INSERT INTO purchase_guards (account_id, service_id, target_key, quantity, expires_at) "
         "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, service_id, target_key, quantity) "
         "DO UPDATE SET expires_at = excluded.expires_at WHERE purchase_guards.expires_at <= ? "
         "RETURNING expires_at")
ORDER = ("INSERT INTO orders (account_id, service_id, target, target_key, quantity, charge, "
         "remains, status, provider_id, request_id, created_at, updated_at) "
         "VALUES (?, ?, ?, ?, ?, ?, ?, 'Pending', ?, ?, ?, ?) RETURNING id")
DISPATCH = ("INSERT INTO dispatches (order_id, kind, state, attempts, due_at, created_at, "
            "updated_at) VALUES (?, 'add', 'due', 0, ?, ?, ?)")
DEBIT = ("UPDATE accounts SET balance = balance + ? WHERE id = ? AND balance + ? >= 0 "
         "RETURNING balance")
LEDGER = ("INSERT INTO ledger (account_id, amount, kind, order_id, note, request_id, created_at) "
          "VALUES (?, ?, 'charge', ?, ?, ?, ?)")
local = threading.local()


class Refused(Exception):
    """An answer {"error": code}: the order's savepoint is rolled back, the group goes on."""


def connection():
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = sqlite3.connect(DATABASE, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=5000",
                       "synchronous=FULL"):
            conn.execute(f"PRAGMA {pragma}")
    return conn


def amount(micro):
    whole, frac = divmod(micro, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".")


def answer(body: dict, rid: str):
    return Response(json.dumps(body), mimetype="application/json",
                    headers={"x-serva-request-id": rid})


@app.route("/api/v1", methods=["GET", "POST"], strict_slashes=False)
def endpoint():
    rid = f"{random.getrandbits(128):032x}"
    form = request.form
    digest = hashlib.sha256(form.get("key", "").encode()).hexdigest()
    try:
        if form.get("action") == "add":
            return answer(add(digest, form, rid), rid)
        row = connection().execute(AUTH, (digest,)).fetchone()
        if row is None:
            raise Refused("bad_auth")
        return answer({"balance": amount(row[1]), "currency": "USD"}, rid)
    except Refused as refused:
        return answer({"error": str(refused), "code": str(refused)}, rid)


def add(digest, form, rid):
    service_id, link = int(form["service"]), form["link"]
    row = connection().execute(AUTH_ADD, (service_id, digest)).fetchone()
    if row is None:
        raise Refused("bad_auth")
    account_id, rate, found, provider_id = row
    if found is None:
        raise Refused("service_unavailable")
    quantity = int(form["quantity"])
    charge = (rate * quantity + 500) // 1000
    target_key = hashlib.sha256(f"{service_id}\n{link}".encode()).hexdigest()

    def work(conn):
        stamp = int(time.time())
        if conn.execute(GUARD, (account_id, service_id, target_key, quantity,
                                stamp + GUARD_WINDOW_SECONDS, stamp)).fetchone() is None:
            raise Refused("duplicate_target")
        try:
            order_id = conn.execute(ORDER, (account_id, service_id, link, target_key, quantity,
                                            charge, quantity, provider_id, rid, stamp,
                                            stamp)).fetchone()[0]
        except sqlite3.IntegrityError:
            raise Refused("active_order_exists") from None
        if provider_id is not None:
            conn.execute(DISPATCH, (order_id, stamp, stamp, stamp))
        debited = conn.execute(DEBIT, (-charge, account_id, -charge)).fetchone()
        if debited is None:  # the conditional debit matched no row
            raise Refused("insufficient_balance")
        balance = debited[0]
        conn.execute(LEDGER, (account_id, -charge, order_id, f"order {order_id}", rid, stamp))
        return {"order": order_id, "charge": amount(charge), "currency": "USD",
                "balance": amount(balance)}

    return grouped(work)


# ---------------------------------------------------------------- group commit

class _Turn:
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work):
        self.work, self.done, self.result, self.error = work, False, None, None


_queue, _queue_lock, _writer = [], threading.Lock(), threading.Lock()


def grouped(work):
    """Run `work(conn)` in a write transaction shared with the works other threads queued
    meanwhile. Whoever holds `_writer` takes every queued work, runs each in its own SAVEPOINT
    (a refused one is rolled back alone) and commits once; a thread that then gets `_writer`
    and finds its work done returns its outcome. A work is taken from the queue only by a
    holder of `_writer`, and marked done before that holder lets go, so a thread never
    returns before the COMMIT that made its order durable. If anything else fails, the whole
    transaction is rolled back and every work of the group fails with that error."""
    turn = _Turn(work)
    with _queue_lock:
        _queue.append(turn)
    with _writer:
        if not turn.done:
            with _queue_lock:
                group = _queue[:]
                del _queue[:]
            _commit(connection(), group)
    if turn.error is not None:
        raise turn.error
    return turn.result


def _commit(conn, group):
    try:
        conn.execute("BEGIN IMMEDIATE")
        for turn in group:
            conn.execute("SAVEPOINT turn")
            try:
                turn.result = turn.work(conn)
            except Refused as refused:
                turn.error = refused
                conn.execute("ROLLBACK TO turn")
            conn.execute("RELEASE turn")
        conn.execute("COMMIT")
    except Exception as error:  # nothing of the group was committed
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for turn in group:
            turn.result, turn.error = None, error
    finally:
        for turn in group:
            turn.done = True
