"""`serva serve`: the production server, one worker process per core.

One Python process runs Python on one core at a time (the GIL). `serva serve --workers N`
binds the listening socket once in the parent, then forks N worker processes that all accept
from it; each worker creates its own app *after* the fork (its own engine, pool and locks:
nothing of a database connection crosses a fork) and serves it with waitress and T threads.
The parent only supervises: it restarts a worker that dies, and on SIGTERM or SIGINT stops
them all (SIGKILL after a grace period) and exits.

Each worker is pinned to a core of its own (`--pin`, the default). A waitress process is one
I/O thread plus T request threads taking turns on the GIL, and every SQLite call hands the
GIL over. When those threads are spread over several cores, each hand-over is a cross-core
wake-up: on a 2-core VM that doubled the CPU time per request and halved the throughput
(bench/README.md has the measurements). On one core the waiting threads simply are not
scheduled while the GIL holder runs. `--no-pin` leaves placement to the kernel.

The workers share the database file safely: SQLite in WAL mode lets readers run in every
process at once, and every write transaction is BEGIN IMMEDIATE, which SQLite serializes
across processes (each waits up to the busy timeout), so the money checks that hold for one
process hold for several (tests/test_serve.py proves it on a real multi-worker server).

`python -m serva.serve [options] module:app` serves any WSGI app the same way (the benchmark
serves its bare endpoint so, to compare like with like).
"""
import argparse
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time

import click
from flask import current_app
from flask.cli import with_appcontext

log = logging.getLogger("serva.serve")
GRACE_SECONDS = 10
RESPAWN_PAUSE_SECONDS = 1
DEFAULT_THREADS = 8  # enough in-flight orders per worker for group commits (bench/README.md)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _Formatter(logging.Formatter):
    """logging.Formatter, with the date and time text made once per second, not per line."""

    _second = _text = None

    def formatTime(self, record, datefmt=None):
        second = int(record.created)
        if second != self._second or datefmt:
            self._text = time.strftime(datefmt or self.default_time_format,
                                       self.converter(record.created))
            self._second = None if datefmt else second
        return self.default_msec_format % (self._text, record.msecs) if not datefmt else self._text


class QueueDepthFilter(logging.Filter):
    """waitress logs "Task queue depth is N" for every request that waits for a thread, which
    under sustained load is most requests: let one such line through per INTERVAL seconds,
    with the largest depth seen since the last one, so the saturation stays visible without
    doubling the log."""

    INTERVAL = 10.0

    def __init__(self):
        super().__init__()
        self.shown_at = 0.0
        self.deepest = 0
        self.hidden = 0

    def filter(self, record):
        depth = record.args[0] if isinstance(record.args, tuple) and record.args else 0
        self.deepest = max(self.deepest, depth if isinstance(depth, int) else 0)
        now = time.monotonic()
        if now - self.shown_at < self.INTERVAL:
            self.hidden += 1
            return False
        if self.hidden:
            record.msg = "Task queue depth is %d (deepest %d; %d such warnings in the last %ds)"
            record.args = (depth, self.deepest, self.hidden + 1, int(now - self.shown_at))
        self.shown_at, self.deepest, self.hidden = now, 0, 0
        return True


def configure_logging() -> None:
    """The access log and errors on stderr, one line each, written out (and flushed) as each
    request is answered: a partner quoting a request id must find its line after a crash."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("waitress.queue").addFilter(QueueDepthFilter())
    # What the format does not show is not computed for every record: thread and process
    # names, and the caller's file and line (a walk up the stack per record).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def bind(host: str, port: int, backlog: int = 2048, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bind_all(host: str, port: int, count: int) -> list:
    """The listening sockets, all bound by the parent before any fork: one per worker with
    SO_REUSEPORT where the system has it (the kernel then spreads new connections evenly over
    the workers; with one shared socket whichever worker wakes first takes them, and a burst
    of connections can land mostly on one core), else one socket that every worker shares.
    The parent keeps them open, so a restarted worker takes over its predecessor's socket
    and the connections waiting on it."""
    if count < 2 or not hasattr(socket, "SO_REUSEPORT"):
        return [bind(host, port)]
    first = bind(host, port, reuse_port=True)
    port = first.getsockname()[1]
    return [first] + [bind(host, port, reuse_port=True) for _ in range(count - 1)]


def cores() -> list:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _worker(sock: socket.socket, threads: int, app_factory, core) -> None:
    """Runs in a forked child: make the app, serve until told to stop. Never returns."""
    app, code = None, 0
    try:
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGINT, _exit_on_signal)
        if core is not None:
            os.sched_setaffinity(0, {core})  # before waitress starts its threads: they inherit it
        from waitress import serve
        app = app_factory()
        engine = getattr(app, "extensions", {}).get("serva.engine")
        if engine is not None and "SERVA_WRITE_WAITERS" not in os.environ:
            from .db import places_for, writer_places
            writer_places(engine, places_for(threads))
        serve(app, sockets=[sock], threads=threads, _quiet=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0
    except BaseException:  # noqa: BLE001 - report it; the parent starts another worker
        log.exception("worker %d failed", os.getpid())
        code = 1
    try:
        flush = getattr(app, "extensions", {}).get("serva.key_touches")
        if flush is not None:
            from .auth import flush_key_uses
            flush_key_uses(app)  # the last second of queued "last used" times
    except Exception:  # noqa: BLE001
        log.exception("worker %d could not flush key use times", os.getpid())
    logging.shutdown()
    os._exit(code)


def _exit_on_signal(signum, _frame):
    raise SystemExit(0)


def _spawn(sock, threads, app_factory, core) -> int:
    pid = os.fork()
    if pid == 0:
        _worker(sock, threads, app_factory, core)
    return pid


def run(host: str, port: int, workers: int, threads: int, app_factory, pin: bool = True,
        ready=None) -> int:
    """Bind, fork `workers` children (worker i pinned to core i, round robin, when `pin`),
    supervise them until SIGTERM/SIGINT; returns the exit status."""
    sockets = bind_all(host, port, workers)
    actual_port = sockets[0].getsockname()[1]
    available = cores()
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = {}  # pid -> (worker index, start time)

    def start(index):
        core = available[index % len(available)] if pin else None
        sock = sockets[index % len(sockets)]
        children[_spawn(sock, threads, app_factory, core)] = (index, time.monotonic())

    for index in range(workers):
        start(index)
    log.info("serving on http://%s:%d: %d worker process(es) x %d threads%s (parent pid %d)",
             host, actual_port, workers, threads,
             f", pinned to cores {[available[i % len(available)] for i in range(workers)]}"
             if pin else "", os.getpid())
    if ready is not None:
        ready(actual_port)
    deadline = None
    while children:
        if stopping and deadline is None:
            deadline = time.monotonic() + GRACE_SECONDS
            for pid in children:
                _signal(pid, signal.SIGTERM)
        if deadline is not None and time.monotonic() > deadline:
            for pid in children:
                _signal(pid, signal.SIGKILL)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
            continue
        index, started = children.pop(pid, (None, None))
        if index is None or stopping:
            continue
        log.warning("worker %d exited (status %d); starting another", pid, status)
        if time.monotonic() - started < RESPAWN_PAUSE_SECONDS:
            time.sleep(RESPAWN_PAUSE_SECONDS)  # do not spin on a worker that cannot start
        start(index)
    for sock in sockets:
        sock.close()
    return 0


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _check_database(app) -> None:
    from .db import NotWritable, check_writable, get_engine, schema_problem
    with app.app_context():
        message = schema_problem(get_engine())  # behind or ahead of head, or not initialized
        if message:
            raise click.ClickException(message)
        try:
            check_writable(get_engine())
        except NotWritable as error:
            raise click.ClickException(str(error)) from None
        get_engine().dispose()  # no connection of the parent survives into the workers


def _serva_factory():
    """How a worker makes its app: the same factory `serva` uses (after the fork)."""
    from . import create_app
    return create_app()


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=len(cores()), show_default="the number of cores",
              type=click.IntRange(1, 64), help="Worker processes (each one uses a core).")
@click.option("--threads", default=DEFAULT_THREADS, show_default=True,
              type=click.IntRange(1, 256), help="waitress threads per worker.")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="Pin worker i to core i (round robin).")
@with_appcontext
def serve_command(host, port, workers, threads, pin):
    """Serve the API: worker processes sharing one listening socket, one per core."""
    configure_logging()
    _check_database(current_app._get_current_object())
    sys.exit(run(host, port, workers, threads, _serva_factory, pin=pin))


def _import_app(spec: str):
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute or "app")


def main(argv=None) -> int:
    """`python -m serva.serve module:app`: any WSGI app, served like `serva serve` serves Serva."""
    parser = argparse.ArgumentParser(prog="python -m serva.serve", description=main.__doc__)
    parser.add_argument("app", help="module:attribute of a WSGI app (imported in each worker)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=len(cores()))
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args(argv)
    configure_logging()
    sys.path.insert(0, os.getcwd())
    return run(args.host, args.port, args.workers, args.threads,
               lambda: _import_app(args.app), pin=args.pin)


if __name__ == "__main__":
    sys.exit(main())
