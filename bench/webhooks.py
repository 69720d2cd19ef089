"""Webhook delivery: 10,000 order status changes delivered to a receiver answering in 50 ms.

1. starts a receiver on 127.0.0.1 in its own process (http.server, one thread per connection,
   each answer 204 after DELAY seconds), which verifies every delivery's signature with the
   `standardwebhooks` package and counts distinct webhook-ids;
2. writes CHANGES orders (charge 0, so no money moves) of one partner whose endpoint is the
   receiver, then moves each to `In progress` through `orders.set_status`, 200 per transaction:
   each move writes its event in the outbox; the time it takes;
3. delivers them with the worker's delivery pass and the default settings
   (SERVA_WEBHOOK_CONCURRENCY in flight); deliveries per second (the target: at least 200);
4. checks: every event `delivered`, the receiver saw each webhook-id, every signature
   verified. Writes bench/results/webhooks.json. Bounded: under a minute at the target rate.

Run: .venv/bin/python bench/webhooks.py [--changes N] [--delay S]
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
RESULTS = os.path.join(ROOT, "bench", "results", "webhooks.json")
BATCH = 200


def receiver_process(port_queue, delay, secret):
    """The receiver: verifies, counts, answers 204 after `delay`; GET gives its counts."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from standardwebhooks.webhooks import Webhook

    webhook = Webhook(secret)
    lock = threading.Lock()
    seen, counts = set(), {"requests": 0, "bad_signatures": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                webhook.verify(body, dict(self.headers))
                good = True
            except Exception:  # noqa: BLE001 - counted, the bench fails on any
                good = False
            with lock:
                counts["requests"] += 1
                counts["bad_signatures"] += not good
                seen.add(self.headers["webhook-id"])
            time.sleep(delay)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            with lock:
                data = json.dumps({**counts, "distinct": len(seen)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever(poll_interval=0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()

    from sqlalchemy import func, insert, select
    from serva import create_app, db, fulfilment, orders as orders_repo, services
    from serva.accounts import create as create_account
    from serva.schema import orders, webhook_endpoints, webhook_events
    from serva.webhooks import delivery, endpoints

    workdir = tempfile.mkdtemp(prefix="serva-bench-webhooks-")
    path = os.path.join(workdir, "serva.sqlite")
    os.environ.pop("SERVA_DATABASE_URL", None)
    app = create_app({"DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": "bench",
                      "WEBHOOK_ALLOW_PRIVATE": True})
    db.init_schema(app.extensions["serva.engine"])
    secret = endpoints.new_secret()
    queue = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=receiver_process, daemon=True,
                                       args=(queue, args.delay, secret))
    receiver.start()
    port = queue.get(timeout=30)
    try:
        with app.app_context(), db.write() as conn:
            account_id = create_account(conn, "bench@example.com", None, approved=True)
            services.add(conn, id=1, name="Bench followers", rate=0, min_quantity=10,
                         max_quantity=10_000)
            endpoints.set_url(conn, account_id, f"http://127.0.0.1:{port}/hooks", True)
            conn.execute(webhook_endpoints.update().values(secret=secret))  # the receiver knows it
            now = db.now()
            conn.execute(insert(orders), [
                {"account_id": account_id, "service_id": 1, "target": f"https://example.com/{i}",
                 "target_key": f"{i:064x}", "quantity": 100, "charge": 0, "status": "Pending",
                 "created_at": now, "updated_at": now} for i in range(args.changes)])
            ids = conn.execute(select(orders.c.id).order_by(orders.c.id)).scalars().all()
        started = time.perf_counter()
        for i in range(0, len(ids), BATCH):
            with app.app_context(), db.write() as conn:
                for order_id in ids[i:i + BATCH]:
                    orders_repo.set_status(conn, order_id, "In progress", start_count=5, remains=60)
        change_seconds = time.perf_counter() - started
        with app.app_context():
            config = fulfilment.settings()
            started = time.perf_counter()
            counts = delivery.delivery_pass("bench-pass", config, threading.Event())
            delivery_seconds = time.perf_counter() - started
            with db.read() as conn:
                states = dict(conn.execute(select(webhook_events.c.state, func.count())
                                           .group_by(webhook_events.c.state)).all())
        import urllib3
        seen = json.loads(urllib3.request("GET", f"http://127.0.0.1:{port}/").data)
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
            "receiver_delay_seconds": args.delay,
            "webhook_concurrency": config["WEBHOOK_CONCURRENCY"],
            "status_changes": args.changes, "change_seconds": round(change_seconds, 2),
            "changes_per_second": round(args.changes / change_seconds, 1),
            "delivery_seconds": round(delivery_seconds, 2),
            "deliveries_per_second": round(counts["delivered"] / delivery_seconds, 1),
            "delivered": counts["delivered"], "receiver": seen,
            "checks": {"every event delivered": states == {"delivered": args.changes},
                       "every webhook-id received": seen["distinct"] == args.changes,
                       "every signature verified": seen["bad_signatures"] == 0,
                       "at least 200 deliveries/s": counts["delivered"] / delivery_seconds >= 200},
        }
        app.extensions["serva.engine"].dispose()
    finally:
        receiver.terminate()
        receiver.join(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    sys.exit(0 if all(result["checks"].values()) else 1)


if __name__ == "__main__":
    main()
