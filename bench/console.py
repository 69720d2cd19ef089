"""`make bench-console`: every console page's latency on 1,000,000 orders and 10,000 accounts.

1. builds (once, cached) the bench dataset (bench/gen.py) and works on a copy of it;
2. adds what the dataset lacks for the console: two providers with 50 services linked to
   them and a share of orders handed over, an owner operator (enrolled, signed in over the
   forms with a real TOTP code), and a few thousand activity entries;
3. requests each page RUNS times in-process (the app called through Flask's test client: the
   app's own time, no socket, no server), the clock set to an hour after the newest order so
   the overview's windows hold a month of real orders;
4. prints p50 / p95 / max per page and flags any p95 above the target (300 ms); writes
   bench/results/console.json.

Not a test: run it on a quiet machine. Run: .venv/bin/python bench/console.py [--runs N]
"""
import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import gen  # noqa: E402

RESULTS = os.path.join(HERE, "results", "console.json")
TARGET_MS = 300
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')


def enrich(db_path: str) -> dict:
    """Providers, linked services, handed-over orders and activity rows; returns ids the
    pages are asked about."""
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("BEGIN")
    for pid, name in ((1, "alpha"), (2, "beta")):
        con.execute("INSERT INTO providers (id, name, url, api_key, enabled, idempotent, balance, "
                    "balance_currency, balance_at, created_at) VALUES (?,?,?,?,1,0,?,?,?,?)",
                    (pid, name, "sim://", f"bench-provider-key-{name}-0123456789", 5_000_000,
                     "USD", gen.EPOCH, gen.EPOCH))
    con.execute("UPDATE services SET provider_id = 1 + (id % 2), provider_service = id, "
                "provider_rate = rate * 8 / 10 WHERE id <= 50")
    con.execute("UPDATE orders SET provider_id = 1 + (service_id % 2), provider_order = 'P' || id "
                "WHERE service_id <= 50")
    con.execute("INSERT INTO dispatches (order_id, kind, state, attempts, due_at, created_at, "
                "updated_at) SELECT id, 'add', CASE WHEN id % 1000 = 0 THEN 'unknown' ELSE 'done' END, "
                "1, created_at, created_at, created_at FROM orders WHERE service_id <= 50")
    con.executemany("INSERT INTO activity (created_at, actor, action, subject, after_json, request_id) "
                    "VALUES (?,?,?,?,?,?)",
                    [(gen.EPOCH + i, "cli", "account.credit", f"bench{i % 10_000}@example.com",
                      '{"balance": 1}', f"cli:{i:032x}") for i in range(5_000)])
    newest, sample = con.execute("SELECT max(created_at), max(id) FROM orders").fetchone()
    account = con.execute("SELECT id, email FROM accounts WHERE id = 4242").fetchone()
    con.execute("UPDATE orders SET request_id = 'bench-request-77' WHERE id = ?", (sample - 12345,))
    con.execute("COMMIT")
    con.close()
    return {"newest": newest, "order": sample - 12345, "account_id": account[0],
            "email": account[1]}


def sign_in(client):
    from serva import db, operators
    with client.application.app_context(), db.write() as conn:
        operators.create(conn, "bench-owner@example.com", "owner", "bench-password")
    import pyotp
    page = client.get("/admin/login").get_data(as_text=True)
    client.post("/admin/login", data={"email": "bench-owner@example.com",
                                      "password": "bench-password",
                                      "csrf_token": TOKEN.search(page).group(1)})
    page = client.get("/admin/enrol").get_data(as_text=True)
    secret = SECRET.search(page).group(1)
    done = client.post("/admin/enrol", data={"code": pyotp.TOTP(secret).now(),
                                             "csrf_token": TOKEN.search(page).group(1)})
    assert done.status_code == 200, done.status_code


def pages(known: dict) -> dict:
    from serva.ids import present_order
    order = present_order(known["order"])
    day = time.strftime("%Y-%m-%d", time.gmtime(known["newest"] - 5 * 86400))
    return {
        "overview": "/admin/",
        "orders": "/admin/orders",
        "orders deep page": f"/admin/orders?before={known['order'] // 2}",
        "orders by status": "/admin/orders?status=Partial",
        "orders by account": f"/admin/orders?account={known['email']}",
        "orders by service": "/admin/orders?service=7",
        "orders by provider": "/admin/orders?provider=beta",
        "orders by dates": f"/admin/orders?from={day}&to={day}T12:00",
        "orders by request id": "/admin/orders?request_id=bench-request-77",
        "orders link contains": "/admin/orders?link=example",
        "orders csv (50 rows)": "/admin/orders.csv?service=7&from=" + day,
        "order": f"/admin/orders/{order}",
        "accounts": "/admin/accounts",
        "accounts search": "/admin/accounts?q=partner42",
        "account": f"/admin/accounts/{known['account_id']}",
        "services": "/admin/services",
        "providers": "/admin/providers",
        "refills": "/admin/refills",
        "cancels": "/admin/cancels",
        "coupons": "/admin/coupons",
        "activity": "/admin/activity",
        "activity search": "/admin/activity?q=bench77",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()
    data_set = gen.build(accounts=args.accounts, orders=args.orders)
    work = tempfile.mkdtemp(prefix="serva-console-bench-")
    try:
        db_path = os.path.join(work, "serva.sqlite")
        shutil.copy(data_set["db"], db_path)
        known = enrich(db_path)
        os.environ.update({"SERVA_DATABASE_URL": f"sqlite:///{db_path}",
                           "SERVA_SECRET_KEY": "bench"})
        from freezegun import freeze_time
        from serva import create_app
        app = create_app()
        results = {}
        with freeze_time(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(known["newest"] + 3600)),
                         tick=True):
            client = app.test_client()
            sign_in(client)
            for name, path in pages(known).items():
                timings = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    response = client.get(path)
                    timings.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                timings.sort()
                p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
                results[name] = {"p50_ms": round(statistics.median(timings), 1),
                                 "p95_ms": round(p95, 1), "max_ms": round(timings[-1], 1)}
                flag = "" if p95 <= TARGET_MS else f"  ABOVE {TARGET_MS} ms"
                print(f"{name:24s} p50 {results[name]['p50_ms']:7.1f} ms  p95 {p95:7.1f} ms  "
                      f"max {timings[-1]:7.1f} ms{flag}", flush=True)
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as handle:
            json.dump({"orders": args.orders, "accounts": args.accounts, "runs": args.runs,
                       "target_ms": TARGET_MS, "pages": results}, handle, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
