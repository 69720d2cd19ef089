"""`make bench-cpu`: the CPU time of one request per action, the WSGI app called in-process.

No server, no socket, no load generator: the same form-encoded requests `make bench` sends
(bench/api.lua) are built as WSGI environs and handed to Serva's app, the bare endpoint
(bench/bare.py) and nothing else, one after another in this thread; the figure is this
process's CPU time per request (time.process_time), best of ROUNDS rounds, on a copy of
`make bench`'s 1M-order dataset. It depends far less on what else the machine runs than a
server's req/s, so it can compare two versions of the request path while the machine is shared
(for exact repeatability, count instructions: `valgrind --tool=callgrind`). What it leaves out
is what a server adds per request (the HTTP parser, threads handing the GIL over); `make bench`
measures that. Logging is set up as `serva serve` sets it up, the access log written line by
line to a file.

    python bench/cpu.py [action ...]     # default: every action; ROUNDS=5 N=2000
"""
import io
import logging
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import gen  # noqa: E402

ACTIONS = ["bare", "balance", "services", "status", "status100", "add"]
ROUNDS = int(os.environ.get("ROUNDS", 5))
N = int(os.environ.get("N", 2000))


def environ(body: bytes) -> dict:
    return {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/api/v1",
            "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0)}


def bodies(action: str, data: dict, nonce: str):
    """An endless cycle of request bodies for `action`, like bench/api.lua's."""
    keys = open(data["keys"]).read().split()
    services = open(data["service_ids"]).read().split()
    status = [line.split() for line in open(data["status"]) if line.strip()]
    i = 0
    while True:
        i += 1
        if action in ("status", "status100"):
            key, ids = status[i % len(status)]
            ids = f"order={ids.split(',')[0]}" if action == "status" else f"orders={ids}"
            yield f"action=status&key={key}&{ids}".encode()
        elif action == "add":
            link = f"https%3A%2F%2Fwww.instagram.com%2Fp%2F{nonce}-{i}"
            yield (f"action=add&key={keys[i % len(keys)]}&service={services[i * 13 % len(services)]}"
                   f"&link={link}&quantity=1000").encode()
        else:
            yield f"action={'balance' if action == 'bare' else action}&key={keys[i % len(keys)]}".encode()


def measure(app, action, data, nonce) -> float:
    """CPU µs per request, best of ROUNDS; every answer checked (200 and no "error")."""
    source = bodies(action, data, nonce)
    status = []

    def start_response(code, headers, exc_info=None):
        status.append(code)

    best = None
    for _ in range(ROUNDS):
        prepared = [environ(next(source)) for _ in range(N)]
        started = time.process_time()
        for env in prepared:
            out = b"".join(app(env, start_response))
            if not status[-1].startswith("200") or b'"error"' in out[:40]:
                raise SystemExit(f"{action}: {status[-1]} {out[:200]!r}")
        spent = (time.process_time() - started) / N * 1e6
        best = spent if best is None else min(best, spent)
    return best


def main():
    actions = sys.argv[1:] or ACTIONS
    data_set = gen.build(orders=1_000_000)  # the bench's dataset: `status` with 100 ids finds 100
    work = tempfile.mkdtemp(prefix="serva-cpu-")
    try:
        db_path = os.path.join(work, "serva.sqlite")
        shutil.copy(data_set["db"], db_path)
        os.environ.update({"SERVA_DATABASE_URL": f"sqlite:///{db_path}",
                           "SERVA_SECRET_KEY": "bench",
                           "SERVA_RATE_LIMIT_PER_KEY": "1000000/second",
                           "SERVA_RATE_LIMIT_INVALID_KEYS": "1000000/minute"})
        from serva.serve import configure_logging
        configure_logging()
        logging.getLogger().handlers[0].setStream(open(os.path.join(work, "access.log"), "w"))
        import bare
        from serva import create_app
        app = create_app()
        nonce = str(int(time.time()))
        results = {}
        for action in actions:
            target = bare.app if action == "bare" else app
            results[action] = measure(target, action, data_set, nonce)
            print(f"{action:10s} {results[action]:8.1f} µs CPU per request", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
