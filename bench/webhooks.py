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
   verified. Bounded: under a minute at the target rate.

With --with-api (`make bench-webhooks`), then the API while deliveries run: `make bench`'s
comparison of each action (balance, status, add) with the bare endpoint in alternating slices
(bench/run.py's servers, wrk and ratios, imported), on a copy of a small dataset (bench/gen.py,
--api-orders) into whose outbox API_EVENTS status changes of another partner were written.
Each round runs every comparison twice: quiet, then while `serva worker` delivers that outbox
to the same receiver (started for it, stopped after); the ratios of both, their relative change
(the target: within 10 %) and the deliveries per second meanwhile. Then `serva audit` on the
copy and the server logs searched as `make bench` does. About 2 minutes with the defaults.

Writes bench/results/webhooks.json.

Run: .venv/bin/python bench/webhooks.py [--changes N] [--delay S] [--with-api [--api-rounds N]
     [--api-slices N] [--api-slice S] [--api-actions a,b] [--api-orders N] [--api-events N]]
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
RESULTS = os.path.join(HERE, "results", "webhooks.json")
WORK = os.path.join(HERE, "data", "run-webhooks")  # servers' logs, wrk's output (git-ignored)
BATCH = 200
API_ACTIONS = ("balance", "status", "add")
RATIO_CHANGE_TARGET = 0.10  # each action's ratio to bare while delivering: at most 10 % lower


def receiver_process(port_queue, delay, secret):
    """The receiver: verifies, counts, answers 204 after `delay`; GET gives its counts. It
    stands for the partners' servers, which are not on Serva's machine: at the lowest CPU
    priority, it takes only what the servers and the worker leave of the two cores."""
    if hasattr(os, "nice"):
        os.nice(19)
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


def status_changes(app, account_id, count) -> float:
    """`count` orders (charge 0: no money moves) of the listening partner moved to In progress
    through `orders.set_status`, BATCH per transaction: each move writes its event in the
    outbox. The seconds the moves took."""
    from sqlalchemy import insert, select
    from serva import db, orders as orders_repo
    from serva.schema import orders

    with app.app_context(), db.write() as conn:
        now = db.now()
        conn.execute(insert(orders), [
            {"account_id": account_id, "service_id": 1, "target": f"https://example.com/{i}",
             "target_key": f"{account_id:08x}{i:056x}", "quantity": 100, "charge": 0,
             "status": "Pending", "created_at": now, "updated_at": now} for i in range(count)])
        ids = conn.execute(select(orders.c.id).where(orders.c.account_id == account_id)
                           .order_by(orders.c.id)).scalars().all()
    started = time.perf_counter()
    for i in range(0, len(ids), BATCH):
        with app.app_context(), db.write() as conn:
            for order_id in ids[i:i + BATCH]:
                orders_repo.set_status(conn, order_id, "In progress", start_count=5, remains=60)
    return time.perf_counter() - started


def listening_partner(app, port, secret, make_service: bool) -> int:
    """A partner whose endpoint is the receiver, signing with the secret the receiver knows."""
    from serva import db, services
    from serva.accounts import create as create_account
    from serva.schema import webhook_endpoints
    from serva.webhooks import endpoints

    with app.app_context(), db.write() as conn:
        account_id = create_account(conn, "webhooks@bench.example", None, approved=True)
        if make_service:
            services.add(conn, id=1, name="Bench followers", rate=0, min_quantity=10,
                         max_quantity=10_000)
        endpoints.set_url(conn, account_id, f"http://127.0.0.1:{port}/hooks", True)
        conn.execute(webhook_endpoints.update().where(webhook_endpoints.c.account_id == account_id)
                     .values(secret=secret))
    return account_id


def delivery_rate(args, port, secret) -> dict:
    """Steps 2-4: the changes, then one delivery pass in this process."""
    from sqlalchemy import func, select
    from serva import create_app, db, fulfilment
    from serva.schema import webhook_events
    from serva.webhooks import delivery

    workdir = tempfile.mkdtemp(prefix="serva-bench-webhooks-")
    path = os.path.join(workdir, "serva.sqlite")
    os.environ.pop("SERVA_DATABASE_URL", None)
    app = create_app({"DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": "bench",
                      "WEBHOOK_ALLOW_PRIVATE": True})
    try:
        db.init_schema(app.extensions["serva.engine"])
        account_id = listening_partner(app, port, secret, make_service=True)
        change_seconds = status_changes(app, account_id, args.changes)
        with app.app_context():
            config = fulfilment.settings()
            started = time.perf_counter()
            counts = delivery.delivery_pass("bench-pass", config, threading.Event())
            delivery_seconds = time.perf_counter() - started
            with db.read() as conn:
                states = dict(conn.execute(select(webhook_events.c.state, func.count())
                                           .group_by(webhook_events.c.state)).all())
        seen = receiver_counts(port)
        app.extensions["serva.engine"].dispose()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
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


def receiver_counts(port) -> dict:
    import urllib3
    return json.loads(urllib3.request("GET", f"http://127.0.0.1:{port}/").data)


def delivered_count(path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM webhook_events WHERE state = 'delivered'"
                           ).fetchone()[0]
    finally:
        con.close()


def api_while_delivering(args, port, secret) -> dict:
    """The API's ratios to the bare endpoint, quiet and while `serva worker` delivers."""
    import gen
    import run as api_bench
    from serva import create_app

    if shutil.which("wrk") is None:
        raise SystemExit("--with-api needs wrk. On Debian/Ubuntu: sudo apt-get install -y wrk")
    api_bench.WORK = WORK  # its servers' logs and wrk's output go here, not over make bench's
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    dataset = gen.build(orders=args.api_orders, quiet=True)
    path = os.path.join(WORK, "app.sqlite")
    shutil.copyfile(dataset["db"], path)
    url = f"sqlite:///{path}"
    os.environ.pop("SERVA_DATABASE_URL", None)
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench", "WEBHOOK_ALLOW_PRIVATE": True})
    account_id = listening_partner(app, port, secret, make_service=False)
    api_bench.say(f"writing {args.api_events} status changes into the outbox ...")
    status_changes(app, account_id, args.api_events)
    app.extensions["serva.engine"].dispose()

    env = {"SERVA_DATABASE_URL": url, "SERVA_SECRET_KEY": "bench", **api_bench.BENCH_LIMITS}
    threads = ["--threads", str(args.threads), "--workers", "1"]
    servers = {"app": api_bench.Server("app", [os.path.join(api_bench.BIN, "serva"), "serve",
                                               "--port", "{port}", *threads], env, ROOT, path),
               "bare": api_bench.Server("bare", [os.path.join(api_bench.BIN, "python"), "-m",
                                                 "serva.serve", "--port", "{port}", *threads,
                                                 "bare:app"], {}, HERE)}
    worker_argv = [os.path.join(api_bench.BIN, "serva"), "worker"]
    worker_env = {**env, "SERVA_WEBHOOK_ALLOW_PRIVATE": "1"}
    phases = {phase: [api_bench.Comparison(f"{phase}-{action}", ("app", action, dataset),
                                           ("bare", "bare", dataset), "action")
                      for action in args.api_actions] for phase in ("quiet", "delivering")}
    probe = f"action=balance&key={open(dataset['keys']).readline().strip()}".encode()
    delivering_seconds, delivered, workers, load_before = 0.0, 0, [], api_bench.load_average()
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready(probe)
        for action in ("bare", *args.api_actions):
            api_bench.wrk(servers["bare" if action == "bare" else "app"], action, 1,
                          args.connections, dataset, f"warm-{action}")
        for round_no in range(1, args.api_rounds + 1):
            for phase, comparisons in phases.items():
                if phase == "delivering":
                    worker = api_bench.Server(f"worker{round_no}", worker_argv, worker_env, ROOT)
                    workers.append(worker)
                    first = delivered_count(path)
                    worker.start()
                    wait_until(lambda: delivered_count(path) > first, worker)
                    started, before = time.perf_counter(), delivered_count(path)
                for comparison in comparisons:
                    got = comparison.run_round(servers, args.api_slices, args.api_slice,
                                               args.connections, round_no)
                    a, b = api_bench.combine(got["a"]), api_bench.combine(got["b"])
                    api_bench.say(f"round {round_no} {comparison.name:18s} {a['rps']:7.1f} / "
                                  f"{b['rps']:7.1f} req/s = {a['rps'] / b['rps']:5.2f}"
                                  + (f"  <-- {a['bad'] + b['bad']} bad" if a["bad"] + b["bad"] else ""))
                if phase == "delivering":
                    delivering_seconds += time.perf_counter() - started
                    delivered += delivered_count(path) - before
                    worker.stop()
        load_after = api_bench.load_average()
    finally:
        for process in (*workers, *servers.values()):
            process.stop()
    left = args.api_events - delivered_count(path)
    audit = api_bench.audit(path)
    logs = {name: api_bench.log_problems(s.log_path) for name, s in {**servers, **{
        w.name: w for w in workers}}.items()}
    actions, bad = {}, 0
    for action in args.api_actions:
        quiet, busy = (api_bench.summarize(next(c for c in phases[p] if c.name == f"{p}-{action}"))
                       for p in ("quiet", "delivering"))
        bad += quiet["a"]["bad"] + quiet["b"]["bad"] + busy["a"]["bad"] + busy["b"]["bad"]
        change = busy["ratio"] / quiet["ratio"] - 1
        actions[action] = {"quiet": {"rps": quiet["a"]["rps"], "bare_rps": quiet["b"]["rps"],
                                     "ratio": quiet["ratio"], "ratios": quiet["ratios"]},
                           "delivering": {"rps": busy["a"]["rps"], "bare_rps": busy["b"]["rps"],
                                          "ratio": busy["ratio"], "ratios": busy["ratios"],
                                          "p99_ms": busy["a"]["p99_ms"]},
                           "ratio_change": round(change, 3),
                           # the ratio's two sides on their own (the bare stack moves too)
                           "rps_change": round(busy["a"]["rps"] / quiet["a"]["rps"] - 1, 3),
                           "bare_rps_change": round(busy["b"]["rps"] / quiet["b"]["rps"] - 1, 3),
                           "met": change >= -RATIO_CHANGE_TARGET}
    return {
        "dataset": {k: dataset[k] for k in ("name", "accounts", "services", "orders")},
        "settings": {"rounds": args.api_rounds, "slices": args.api_slices,
                     "slice_s": args.api_slice, "connections": args.connections,
                     "threads": args.threads, "server": "serva serve --workers 1",
                     "events_queued": args.api_events},
        "load_before": load_before, "load_after": load_after,
        "actions": actions,
        "deliveries_while_measuring": delivered,
        "delivering_seconds": round(delivering_seconds, 1),
        "deliveries_per_second": round(delivered / delivering_seconds, 1),
        "events_left": left, "audit": audit, "logs": logs,
        "checks": {"deliveries ran the whole time (events left)": left > 0,
                   "no bad response": bad == 0, "audit passed": audit["ok"],
                   "no database locked, traceback": all(
                       not (v["database_locked"] or v["tracebacks"]) for v in logs.values()),
                   "ratios within 10 % while delivering": all(
                       a["met"] for a in actions.values())},
    }


def wait_until(condition, process, timeout=60):
    """Until the worker delivers (its imports and first claim take a moment on a busy box)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{process.name} delivered nothing; see {process.log_path}")
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--with-api", action="store_true",
                        help="then the API's ratios to bare, quiet and while deliveries run")
    parser.add_argument("--api-rounds", type=int, default=3)
    parser.add_argument("--api-slices", type=int, default=2,
                        help="alternating 1-second slices of each side per round and phase")
    parser.add_argument("--api-slice", type=int, default=1, help="seconds per slice")
    parser.add_argument("--api-actions", type=lambda text: [a for a in text.split(",") if a],
                        default=list(API_ACTIONS))
    parser.add_argument("--api-orders", type=int, default=10_000,
                        help="orders of the API's dataset (bench/gen.py, cached)")
    parser.add_argument("--api-events", type=int, default=20_000,
                        help="status changes queued for the worker (must outlast the rounds)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    from serva.webhooks import endpoints

    secret = endpoints.new_secret()
    queue = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=receiver_process, daemon=True,
                                       args=(queue, args.delay, secret))
    receiver.start()
    port = queue.get(timeout=30)
    try:
        result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                             f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
                  **delivery_rate(args, port, secret)}
        print(json.dumps({k: result[k] for k in ("deliveries_per_second", "checks")}),
              file=sys.stderr, flush=True)
        if args.with_api:
            result["api"] = api_while_delivering(args, port, secret)
            result["api"]["receiver_bad_signatures"] = receiver_counts(port)["bad_signatures"]
            result["api"]["checks"]["every signature verified"] = (
                result["api"]["receiver_bad_signatures"] == 0)
    finally:
        receiver.terminate()
        receiver.join(timeout=5)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    checks = {**result["checks"], **result.get("api", {}).get("checks", {})}
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
