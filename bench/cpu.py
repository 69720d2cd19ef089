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

With --instructions it counts instead: each action runs under `valgrind --tool=callgrind`
(twice: N=300 and N=100 requests after 20 of warm-up, only the requests counted), and the
figure is the difference over 200: instructions per request, the same on any machine state for
the same code and dataset. The floors of `make bench` (bench/reference.py) are actions here
too (`floor-balance`, `floor-add`). While counting, the rate limiter's once-a-second sweep is
off: under callgrind's ~50x slowdown its thread start would land on every few dozen requests
instead of one in thousands. --no-access-log and --no-limits count without either, to see
what each costs (bench/README.md, items 20 and 21). --inside module:function counts only the
instructions inside that function (each of its calls goes through functools.reduce; it must
be looked up by name when called, as `keys.find_key` or `authenticate` are, not held in a
table like the action handlers; or a method, module:Class.method, Flask's own included): where
a request's instructions go, function by function.

    python bench/cpu.py [action ...]     # default: every action; ROUNDS=5 N=2000
    python bench/cpu.py --instructions [--no-access-log] [--no-limits] [action ...]
    python bench/cpu.py --instructions --inside serva.api:read_params add
    python bench/cpu.py --instructions --inside flask.app:Flask.create_url_adapter bare
"""
import argparse
import functools
import importlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import gen  # noqa: E402

ACTIONS = ["bare", "balance", "services", "status", "status100", "add", "floor-balance",
           "floor-add"]
COUNTED = (300, 100)  # requests counted under callgrind: the difference over 200 is per request
WARM_UP = 20
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


def collect(app, action, data, nonce, n, inside=False) -> None:
    """Run WARM_UP requests, then n inside functools.reduce: callgrind's --toggle-collect on
    that one C function counts exactly the n requests and nothing of the setup. With `inside`
    (a function already routed through functools.reduce, `count_inside`) the requests run in
    a plain loop, so only that function's calls are counted."""
    source = bodies(action, data, nonce)
    status, answers = [], []

    def start_response(code, headers, exc_info=None):
        status.append(code)

    def one(count, env):
        answers.append(b"".join(app(env, start_response)))
        return count + 1

    prepared = [environ(next(source)) for _ in range(WARM_UP + n)]
    for batch in (prepared[:WARM_UP], prepared[WARM_UP:]):
        if inside:
            for env in batch:
                one(0, env)
        else:
            functools.reduce(one, batch, 0)
    for code, out in zip(status, answers):  # every answer checked, after the count
        if not code.startswith("200") or b'"error"' in out[:40]:
            raise SystemExit(f"{action}: {code} {out[:200]!r}")


def count_inside(target: str) -> None:
    """Route every call of `target` through functools.reduce: `module:function`, wherever a
    module of Serva's holds it by name, or `module:Class.method` (Flask's, werkzeug's or
    Serva's), on that class."""
    module_name, _, name = target.partition(":")
    owner = importlib.import_module(module_name)
    owner_name, _, name = name.rpartition(".")
    if owner_name:
        owner = getattr(owner, owner_name)
    real = getattr(owner, name)

    def routed(*args, **kwargs):
        result = []
        functools.reduce(lambda _, __: result.append(real(*args, **kwargs)), (0,), None)
        return result[0]

    if owner_name:
        setattr(owner, name, routed)
        return
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("serva") and vars(module).get(name) is real:
            setattr(module, name, routed)


def count_instructions(action, options) -> int:
    """Instructions per request of `action`, from two callgrind runs of this script."""
    totals = []
    for n in COUNTED:
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--toggle-collect=functools_reduce",
             "--callgrind-out-file=/dev/null", sys.executable, os.path.abspath(__file__),
             "--collect", str(n), *options, action],
            capture_output=True, text=True, check=False,
            env={**os.environ, "PYTHONHASHSEED": "0"})  # the same dict layouts every run
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            raise SystemExit(f"{action}: callgrind failed\n{run.stdout[-2000:]}"
                             f"{run.stderr[-2000:]}")
        totals.append(int(found.group(1)))
    return (totals[0] - totals[1]) // (COUNTED[0] - COUNTED[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("actions", nargs="*", metavar="action",
                        help=f"any of {', '.join(ACTIONS)} (default: all)")
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--no-limits", action="store_true")
    parser.add_argument("--inside", metavar="module:function",
                        help="with --instructions: count only inside this function "
                             "(or module:Class.method)")
    parser.add_argument("--collect", type=int, help=argparse.SUPPRESS)  # the counted child
    args = parser.parse_args()
    actions = args.actions or ACTIONS
    if set(actions) - set(ACTIONS):
        parser.error(f"unknown action(s): {', '.join(sorted(set(actions) - set(ACTIONS)))}")
    options = [flag for flag, on in (("--no-access-log", args.no_access_log),
                                     ("--no-limits", args.no_limits)) if on]
    if args.inside:
        options += ["--inside", args.inside]
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
        gen.build(orders=1_000_000)  # built once here, not under callgrind
        for action in actions:
            count = count_instructions(action, options)
            print(f"{action:14s} {count:>10,} instructions per request", flush=True)
        return
    data_set = gen.build(orders=1_000_000)  # the bench's dataset: `status` with 100 ids finds 100
    work = tempfile.mkdtemp(prefix="serva-cpu-")
    try:
        db_path = os.path.join(work, "serva.sqlite")
        shutil.copy(data_set["db"], db_path)
        os.environ.update({"SERVA_DATABASE_URL": f"sqlite:///{db_path}",
                           "SERVA_SECRET_KEY": "bench",
                           "SERVA_RATE_LIMIT_PER_KEY": "1000000/second",
                           "SERVA_RATE_LIMIT_INVALID_KEYS": "1000000/minute",
                           "SERVA_BENCH_DB": db_path})  # the floors' database
        if args.no_limits:
            os.environ.update({"SERVA_RATE_LIMIT_PER_KEY": "",
                               "SERVA_RATE_LIMIT_INVALID_KEYS": ""})
        from serva import logs
        logs.configure()
        logging.getLogger().handlers[0].setStream(open(os.path.join(work, "access.log"), "w"))
        if args.no_access_log:
            logging.getLogger("serva.access").setLevel(logging.WARNING)
        import bare
        import reference
        from serva import create_app
        app = create_app()
        if args.collect is not None and args.inside:
            count_inside(args.inside)
        for action in actions:
            nonce = f"{int(time.time())}-{action}"  # an order's link is never another action's
            target = {"bare": bare.app, "floor-balance": reference.app,
                      "floor-add": reference.app}.get(action, app)
            kind = action.removeprefix("floor-")
            if args.collect is not None:
                collect(target, kind, data_set, nonce, args.collect, inside=bool(args.inside))
                continue
            spent = measure(target, kind, data_set, nonce)
            print(f"{action:14s} {spent:8.1f} µs CPU per request", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
