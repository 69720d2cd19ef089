"""`serva serve`: the production server on every core.

One waitress process runs Python on one core at a time (the GIL). `serva serve --workers N`
binds the listening socket once in the parent, then forks N worker processes that all accept
from it; each worker creates its own app *after* the fork (its own engine, pool and locks:
nothing of a database connection crosses a fork) and serves with waitress and T threads.
The parent only supervises: it restarts a worker that dies, and on SIGTERM or SIGINT stops
them all (SIGKILL after a grace period) and exits.

The workers share the database file safely: SQLite in WAL mode lets readers run in every
process at once, and every write transaction is BEGIN IMMEDIATE, which SQLite serializes
across processes (each waits up to the busy timeout), so the money checks that hold for one
process hold for several (tests/test_serve.py proves it on a real multi-worker server).
"""
import logging
import os
import signal
import socket
import sys
import time

import click
from flask import current_app
from flask.cli import with_appcontext

log = logging.getLogger("serva.serve")
GRACE_SECONDS = 10
RESPAWN_PAUSE_SECONDS = 1


def configure_logging() -> None:
    """The access log and errors on stderr, one line each (what wsgi.py sets up)."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Fields the format does not use: skip computing them for every log record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _worker(sock: socket.socket, threads: int, app_factory) -> None:
    """Runs in a forked child: make the app, serve until told to stop. Never returns."""
    app, code = None, 0
    try:
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGINT, _exit_on_signal)
        from waitress import serve
        app = app_factory()
        serve(app, sockets=[sock], threads=threads, _quiet=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0
    except BaseException:  # noqa: BLE001 - report it; the parent starts another worker
        log.exception("worker %d failed", os.getpid())
        code = 1
    try:
        if app is not None:
            from .auth import flush_key_uses
            flush_key_uses(app)  # the last second of queued "last used" times
    except Exception:  # noqa: BLE001
        log.exception("worker %d could not flush key use times", os.getpid())
    logging.shutdown()
    os._exit(code)


def _exit_on_signal(signum, _frame):
    raise SystemExit(0)


def _spawn(sock, threads, app_factory) -> int:
    pid = os.fork()
    if pid == 0:
        _worker(sock, threads, app_factory)
    return pid


def run(host: str, port: int, workers: int, threads: int, app_factory, ready=None) -> int:
    """Bind, fork `workers` children, supervise them; returns the exit status."""
    sock = bind(host, port)
    actual_port = sock.getsockname()[1]
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = {}
    for _ in range(workers):
        children[_spawn(sock, threads, app_factory)] = time.monotonic()
    log.info("serving on http://%s:%d with %d worker processes x %d threads (parent pid %d)",
             host, actual_port, workers, threads, os.getpid())
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
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        log.warning("worker %d exited (status %d); starting another", pid, status)
        if time.monotonic() - started < RESPAWN_PAUSE_SECONDS:
            time.sleep(RESPAWN_PAUSE_SECONDS)  # do not spin on a worker that cannot start
        children[_spawn(sock, threads, app_factory)] = time.monotonic()
    sock.close()
    return 0


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _check_database(app) -> None:
    from .db import get_engine, schema_version
    with app.app_context():
        if schema_version(get_engine()) is None:
            raise click.ClickException("the database is not initialized: run `serva init-db` "
                                       "(and `serva demo` for demo data) first")
        get_engine().dispose()  # no connection of the parent survives into the workers


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=os.cpu_count() or 1, show_default="the number of cores",
              type=click.IntRange(1, 64), help="Worker processes (each one uses a core).")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256),
              help="waitress threads per worker.")
@with_appcontext
def serve_command(host, port, workers, threads):
    """Serve the API with several worker processes sharing one listening socket."""
    configure_logging()
    app = current_app._get_current_object()
    _check_database(app)
    factory = _factory()
    sys.exit(run(host, port, workers, threads, factory))


def _factory():
    """How a worker makes its app: the same factory `serva` uses (after the fork)."""
    def make():
        from . import create_app
        return create_app()
    return make
