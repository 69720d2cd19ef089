"""`serva serve`: the production server, gunicorn with a worker process per core.

One Python process runs Python on one core at a time (the GIL), so production serving takes a
process per core. That is gunicorn's job, run here through its application API
(`gunicorn.app.base.BaseApplication`) with the `gthread` worker class: the master binds the
port, forks the workers and supervises them — a worker that dies or stops answering for
`--timeout` seconds is replaced, `kill -HUP` reloads gracefully (new workers with the new code,
the old ones finish their requests), `--max-requests` recycles workers, SIGTERM stops
gracefully. Each worker builds its own app *after* the fork (its own engine, pool and locks:
nothing of a database connection crosses a fork) and serves it with T threads.

The workers share the database file safely: SQLite in WAL mode lets readers run in every
process at once, and every write transaction is BEGIN IMMEDIATE, which SQLite serializes
across processes, so the money checks that hold for one process hold for several
(tests/test_serve.py proves it on a real multi-worker server, also through `kill -9` of a
worker).

waitress stays the single-process server (`make run`, `waitress-serve wsgi:app`, Windows, where
gunicorn does not run). `python -m serva.serve [options] module:app` serves any WSGI app the
same way as `serva serve` (the benchmark serves its bare endpoint so, to compare like with
like).
"""
import argparse
import ctypes
import errno
import gc
import importlib
import logging
import os
import stat
import sys
import threading
import time

import click
from flask import current_app
from flask.cli import with_appcontext

log = logging.getLogger("serva.serve")
DEFAULT_THREADS = 8  # enough in-flight orders per worker for group commits (bench/README.md)
WORKER_TIMEOUT = 30
GRACEFUL_SECONDS = 10


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _Formatter(logging.Formatter):
    """logging.Formatter, with the date and time text made once per second, not per line."""

    _second = _text = None

    def formatTime(self, record, datefmt=None):
        if datefmt:
            return time.strftime(datefmt, self.converter(record.created))
        return self._asctime(record.created, record.msecs)

    def _asctime(self, created, msecs):
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        return self.default_msec_format % (self._text, msecs)

    def line(self, levelname: str, name: str, message: str) -> str | None:
        """What format() makes of a record of now with these fields, when the format is
        LOG_FORMAT and no date format is set (None otherwise): without a LogRecord."""
        if self._fmt != LOG_FORMAT or self.datefmt:
            return None
        created = time.time()
        msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
        return f"{self._asctime(created, msecs)} {levelname} {name} {message}"


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


def _held_write():
    """write(2) keeping the GIL (ctypes' PyDLL on the process's own C library), for
    LineHandler; None where the process has no such C library to look in (Windows)."""
    try:
        write = ctypes.PyDLL(None, use_errno=True).write
    except (OSError, TypeError, AttributeError):
        return None
    write.restype, write.argtypes = ctypes.c_ssize_t, (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    return write


_HELD_WRITE = _held_write()


class LineHandler(logging.StreamHandler):
    """logging.StreamHandler writing each record as one write() of the whole line to the
    stream's file descriptor, without the handler's lock. StreamHandler holds its lock across
    the write() system call, which releases the GIL: under load the threads that finish their
    requests queue on that lock, one hand-over of the GIL after another (bench/README.md).
    A write() of at most PIPE_BUF bytes is atomic on a pipe (and appended whole to a file), so
    access lines never mix; a longer record (a traceback) is written in one call too and can
    only be split on a pipe. Nothing is buffered: the line is out when emit returns.

    Into a regular file the write keeps the GIL (bench/README.md, item 27): it copies the
    line into the page cache and returns, and releasing the GIL around it handed the GIL to
    another request thread on every request. A pipe or a socket (journald, a container's log
    collector) can be full for as long as its reader is slow, so there os.write() releases
    the GIL and only the writing thread waits."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self._fd, self._held = self._descriptor(self.stream)

    def createLock(self):
        self.lock = None  # Handler.acquire/release do nothing without one
        self._fallback_lock = threading.Lock()  # for a stream without a descriptor only

    @staticmethod
    def _descriptor(stream):
        """The stream's file descriptor (None without one: a test's capture), and whether it
        is a regular file (written with the GIL kept)."""
        try:
            fd = stream.fileno()
            return fd, _HELD_WRITE is not None and stat.S_ISREG(os.fstat(fd).st_mode)
        except (AttributeError, OSError, ValueError):
            return None, False

    def setStream(self, stream):
        old = super().setStream(stream)
        self._fd, self._held = self._descriptor(self.stream)
        return old

    def emit(self, record):
        if self._fd is None:
            with self._fallback_lock:
                return super().emit(record)
        try:
            self._write(self.format(record))
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)

    def _write(self, text: str) -> None:
        data = (text + self.terminator).encode("utf-8", "backslashreplace")
        self.stream.flush()  # whatever was print()ed before, first
        while data:
            if not self._held:
                data = data[os.write(self._fd, data):]
                continue
            written = _HELD_WRITE(self._fd, data, len(data))
            if written < 0:
                error = ctypes.get_errno()
                if error != errno.EINTR:
                    raise OSError(error, os.strerror(error))
            else:
                data = data[written:]


def _sole_line_handler(logger):
    """The LineHandler that a record of `logger` would reach, when it is the only handler on
    the way and nothing filters (configure_logging's own setup); None for any other setup."""
    found = None
    while logger is not None:
        if logger.filters:
            return None
        for handler in logger.handlers:
            if found is not None or type(handler) is not LineHandler:
                return None
            found = handler
        if not logger.propagate:
            break
        logger = logger.parent
    if (found is None or found.filters or found._fd is None or found.level > logging.INFO
            or not isinstance(found.formatter, _Formatter)):
        return None
    return found


def log_info(logger, message: str) -> None:
    """`logger.info(message)`, written straight to Serva's LineHandler when that is where the
    record would go and all it would do there (`configure_logging`'s setup): every request's
    access line, where logging's LogRecord, handler chain and formatter cost ~48 k of a
    `balance`'s ~700 k instructions (bench/README.md, item 21). Any other setup (an operator's
    own handlers or filters, a test's capture) gets the record through logging, unchanged."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_line_handler(logger)
    line = handler.formatter.line("INFO", logger.name, message) if handler is not None else None
    if line is None:
        logger.info(message)
        return
    try:
        handler._write(line)
    except Exception:  # noqa: BLE001 - let logging report it, as emit() would
        logger.info(message)


def configure_logging() -> None:
    """The access log and errors on stderr, one line each, written out as each request is
    answered: a partner quoting a request id must find its line after a crash."""
    handler = LineHandler()
    handler.setFormatter(_Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("waitress.queue").addFilter(QueueDepthFilter())
    # What no format shows is not computed for every record: thread names and the caller's
    # file and line (a walk up the stack per record). Process ids stay: gunicorn logs them.
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def default_workers() -> int:
    """A worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - a broken stderr must not stop the exit
            pass


def _when_ready(server) -> None:
    addresses = ", ".join(str(listener) for listener in server.LISTENERS)
    log.info("serving on %s: %d worker process(es) x %d threads (gunicorn %s, master pid %d)",
             addresses, server.cfg.workers, server.cfg.threads, server.cfg.worker_class_str,
             os.getpid())


def _worker_exit(_server, worker) -> None:
    """A worker stops (SIGTERM, HUP reload, max-requests): write what it still holds — the
    queued "last used" times of keys and any log line not yet out."""
    app = getattr(worker, "wsgi", None)
    if getattr(app, "extensions", {}).get("serva.key_touches") is not None:
        try:
            from .auth import flush_key_uses
            flush_key_uses(app)
        except Exception:  # noqa: BLE001
            log.exception("worker %d could not flush key use times", os.getpid())
    _flush_logs()


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gunicorn_options(host, port, workers, threads, timeout=WORKER_TIMEOUT, max_requests=0) -> dict:
    """gunicorn's settings for `serva serve` (names as in gunicorn's documentation)."""
    return {
        "bind": [_bind_address(host, port)],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": GRACEFUL_SECONDS,
        "max_requests": max_requests,
        "max_requests_jitter": max_requests // 10 if max_requests else 0,
        "backlog": 2048,
        "accesslog": None,  # the app writes the access line itself, with the request id
        "errorlog": "-",
        "loglevel": "info",
        "preload_app": False,  # each worker makes its app after the fork
        "when_ready": _when_ready,
        "worker_exit": _worker_exit,
        # gunicorn ≥ 24's run-time control socket: one fixed path per user, which servers of
        # several databases on one machine would fight over; kill -HUP/-TERM do the job.
        "control_socket_disable": True,
    }


def load_frozen(app_loader):
    """`app_loader()`, then everything made so far (modules, the app, its routes and engine)
    moved out of the garbage collector's generations (`gc.freeze`). It lives as long as the
    worker, yet every full collection would walk all of it: with Serva's ~150,000 objects a
    collection paused all threads for 60-160 ms every few thousand requests (bench/README.md,
    item 24). Frozen objects are never collected; what startup leaves behind is kept once."""
    app = app_loader()
    gc.freeze()
    return app


def run(app_loader, options: dict) -> None:
    """Serve `app_loader()` (called in each worker) under gunicorn with `options`."""
    from gunicorn.app.base import BaseApplication

    class Application(BaseApplication):
        def load_config(self):
            for name, value in options.items():
                if name in self.cfg.settings:  # settings of newer gunicorns are skipped on older
                    self.cfg.set(name, value)

        def load(self):
            return load_frozen(app_loader)

    Application(prog="serva serve").run()


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
        get_engine().dispose()  # no connection of the master survives into the workers


def _serva_loader(threads):
    """How a worker makes its app (after the fork): the same factory `serva` uses."""
    def load():
        from . import create_app
        return create_app()
    return load


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=default_workers(), show_default="the number of cores",
              type=click.IntRange(1, 64), help="Worker processes (each one uses a core).")
@click.option("--threads", default=DEFAULT_THREADS, show_default=True,
              type=click.IntRange(1, 256), help="Request threads per worker.")
@click.option("--timeout", default=WORKER_TIMEOUT, show_default=True, type=click.IntRange(1),
              help="Seconds of silence after which a worker is replaced.")
@click.option("--max-requests", default=0, show_default=True, type=click.IntRange(0),
              help="Replace a worker after this many requests (0: never).")
@with_appcontext
def serve_command(host, port, workers, threads, timeout, max_requests):
    """Serve the API with gunicorn: a worker process per core, T threads each."""
    configure_logging()
    _check_database(current_app._get_current_object())
    run(_serva_loader(threads),
        gunicorn_options(host, port, workers, threads, timeout, max_requests))


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
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args(argv)
    configure_logging()
    sys.path.insert(0, os.getcwd())
    run(lambda: _import_app(args.app), gunicorn_options(args.host, args.port, args.workers,
                                                        args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
