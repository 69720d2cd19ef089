"""`make bench-worker`: the fulfilment worker against a provider that answers in 50 ms.

1. starts a provider on 127.0.0.1 in its own process (http.server, one thread per
   connection, every answer after DELAY seconds: `add` gives a new id, `status` reports
   `In progress` with some remains for every id asked);
2. hand-overs: HANDOVERS orders waiting for their hand-over (written like `add` writes them:
   order row, charge ledger row, hand-over row) are handed over by one worker pass with the
   default settings (SERVA_WORKER_CONCURRENCY threads); hand-overs per second;
3. sync: SYNC_ORDERS active provider orders, all due, are polled by one pass (batches of 100,
   WORKER_CONCURRENCY calls in flight) and every reply applied; the time it takes;
4. checks: every hand-over reached the provider exactly once, every order was updated, and
   `serva audit` passes. Writes bench/results/worker.json. Bounded: ~1-2 minutes.

Run: .venv/bin/python bench/worker.py [--handovers N] [--sync-orders N] [--delay S]
"""
import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "bench", "results", "worker.json")
KEY = "bench-provider-key-0123456789"


def provider_process(port_queue, delay):
    """The provider: a threaded HTTP server answering after `delay` seconds."""
    import itertools
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl

    counter = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave at once, as from a real server

        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            params = dict(parse_qsl(self.rfile.read(length).decode()))
            time.sleep(delay)
            action = params.get("action")
            if action == "add":
                body = {"order": next(counter)}
            elif action == "status":
                body = {token: {"status": "In progress", "remains": 7, "start_count": 1,
                                "charge": "0.1"} for token in params["orders"].split(",")}
            else:
                body = {"balance": "1000000", "currency": "USD"}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever(poll_interval=0.1)


def fill(path, handovers, sync_orders):
    """Orders as `add` leaves them (order, charge ledger row; hand-over row for the waiting
    ones), written through sqlite3 executemany in one transaction, and the account debited by
    their sum, so that balance == sum(ledger) as `add` leaves it."""
    raw = sqlite3.connect(path, isolation_level=None)
    now = int(time.time())
    total = handovers + sync_orders
    charge = 1_000
    raw.execute("BEGIN IMMEDIATE")
    order_rows, ledger_rows, dispatch_rows = [], [], []
    for i in range(1, total + 1):
        waiting = i <= handovers
        order_rows.append((i, 1, 1, f"https://example.com/p/{i}", f"{i:064x}", 100, charge,
                           "Pending" if waiting else "In progress", 100, now, now, 1,
                           None if waiting else str(900_000 + i), None if waiting else 0))
        ledger_rows.append((1, -charge, "charge", f"order {i}", i, now))
        if waiting:
            dispatch_rows.append((i, "add", "due", 0, now, now, now))
    raw.executemany("INSERT INTO orders (id, account_id, service_id, target, target_key, quantity,"
                    " charge, status, remains, created_at, updated_at, provider_id, provider_order,"
                    " next_sync_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", order_rows)
    raw.executemany("INSERT INTO ledger (account_id, amount, kind, note, order_id, created_at)"
                    " VALUES (?,?,?,?,?,?)", ledger_rows)
    raw.executemany("INSERT INTO dispatches (order_id, kind, state, attempts, due_at, created_at,"
                    " updated_at) VALUES (?,?,?,?,?,?,?)", dispatch_rows)
    raw.execute("UPDATE accounts SET balance = balance - ? WHERE id = 1", (charge * total,))
    raw.execute("COMMIT")
    raw.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--handovers", type=int, default=3000)
    parser.add_argument("--sync-orders", type=int, default=100_000)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()

    queue = multiprocessing.Queue()
    provider = multiprocessing.Process(target=provider_process, args=(queue, args.delay), daemon=True)
    provider.start()
    port = queue.get(timeout=30)
    workdir = tempfile.mkdtemp(prefix="serva-bench-worker-")
    path = os.path.join(workdir, "serva.sqlite")
    os.environ.pop("SERVA_DATABASE_URL", None)
    try:
        from serva import create_app, db, ledger, providers, services
        from serva.cli import cli as serva_cli
        from serva.fulfilment import dispatch, runner, sync
        from serva.accounts import create as create_account
        app = create_app({"DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": "bench",
                          "SYNC_INTERVAL_SECONDS": 60})
        db.init_schema(app.extensions["serva.engine"])
        with app.app_context(), db.write() as conn:
            account_id = create_account(conn, "bench@example.com", None, approved=True)
            ledger.post(conn, account_id, 10**15, "topup", "bench")
            provider_id = providers.add(conn, "bench", f"http://127.0.0.1:{port}/api/v2", KEY)
            services.add(conn, id=1, name="Bench followers", rate=10_000, min_quantity=10,
                         max_quantity=10_000, provider_id=provider_id, provider_service="1")
        started = time.perf_counter()
        fill(path, args.handovers, args.sync_orders)
        fill_seconds = time.perf_counter() - started
        with app.app_context():
            config = runner.settings()
            runner.refresh_balances(config, force=True)
            report = runner.Report()
            started = time.perf_counter()
            report.add(dispatch.dispatch_pass("bench-pass", config, threading.Event()))
            handover_seconds = time.perf_counter() - started
            # The hand-overs just accepted are due in SYNC_INTERVAL_SECONDS: only the
            # SYNC_ORDERS active orders are due now.
            sync_report = runner.Report()
            started = time.perf_counter()
            sync_report.add(sync.sync_pass(config, threading.Event()))
            sync_seconds = time.perf_counter() - started
        raw = sqlite3.connect(path)
        handed = raw.execute("SELECT count(*) FROM dispatches WHERE state = 'done'").fetchone()[0]
        distinct = raw.execute("SELECT count(DISTINCT provider_order) FROM orders "
                               "WHERE provider_order IS NOT NULL").fetchone()[0]
        updated = raw.execute("SELECT count(*) FROM orders WHERE remains = 7").fetchone()[0]
        raw.close()
        cli_runner = app.test_cli_runner()
        audit = cli_runner.invoke(serva_cli, args=["audit"]).output.strip()
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                       f"SQLite {sqlite3.sqlite_version}",
            "provider_delay_seconds": args.delay,
            "worker_concurrency": config["WORKER_CONCURRENCY"],
            "handovers": args.handovers, "handover_seconds": round(handover_seconds, 2),
            "handovers_per_second": round(args.handovers / handover_seconds, 1),
            "handed_over": report.handed,
            "sync_orders": args.sync_orders, "sync_seconds": round(sync_seconds, 2),
            "synced": sync_report.synced, "fill_seconds": round(fill_seconds, 1),
            "checks": {"every hand-over done": handed == args.handovers,
                       "distinct provider ids": distinct == args.handovers + args.sync_orders,
                       "every active order updated": updated == args.sync_orders,
                       "audit": audit},
        }
        app.extensions["serva.engine"].dispose()
    finally:
        provider.terminate()
        provider.join(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    ok = all(value is True for key, value in result["checks"].items() if key != "audit") \
        and result["checks"]["audit"].startswith("audit passed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
