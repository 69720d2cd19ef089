"""`serva serve`: the production server, gunicorn with a worker process per core.

One Python process runs Python on one core at a time (the GIL), so production serving takes a
process per core. That is gunicorn's job, run here through its application API
(`gunicorn.app.base.BaseApplication`) with the `gthread` worker class: the master binds the
port, forks the workers and supervises them — a worker that dies or stops answering for
`--timeout` seconds is replaced, `kill -HUP` reloads gracefully (new workers with the new code,
the old ones finish their requests), `--max-requests` recycles workers, SIGTERM stops
gracefully. Each worker builds its own app *after* the fork (its own engine, pool and locks:
nothing of a database connection crosses a fork) and serves it with T threads. Every gunicorn
setting Serva uses is in `gunicorn_options`.

The workers share the database file safely: SQLite in WAL mode lets readers run in every
process at once, and every write transaction is BEGIN IMMEDIATE, which SQLite serializes
across processes, so the money checks that hold for one process hold for several.

waitress is the single-process server of `make run` and of Windows, where gunicorn does not
run: `waitress-serve … wsgi:app` serves `checked_app()`, refused on the same grounds.
`python -m serva.serve [options] module:app` serves any WSGI app the way `serva serve` serves
Serva (the benchmark serves its bare endpoint so, to compare like with like).
"""
import argparse
import gc
import importlib
import logging
import os
import sys

import click
from flask.cli import ScriptInfo, with_appcontext

from . import logs

log = logging.getLogger("serva.serve")
DEFAULT_THREADS = 8
WORKER_TIMEOUT = 30
GRACEFUL_SECONDS = 10


def default_workers() -> int:
    """A worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def startup_problem() -> str | None:
    """Why the current app must not serve (one line), or None: a database that `serva init-db`
    has not prepared, that is behind or ahead of this Serva's schema (a server never migrates
    by itself), or that cannot be written. Afterwards no connection is left open, so none
    crosses a fork."""
    from .db import NotWritable, check_writable, get_engine, schema_problem
    engine = get_engine()
    try:
        message = schema_problem(engine)
        if message:
            return message
        check_writable(engine)
    except NotWritable as error:
        return str(error)
    finally:
        engine.dispose()
    return None


def checked_app(create_app):
    """`create_app()` as waitress serves it (wsgi.py): the settings and the database checked
    — a problem is one line on stderr and exit status 2 (settings) or 1 —, logging
    configured, and what startup made frozen out of the garbage collector's way."""
    from .db import SchemaMismatch
    from .settings import SettingsError
    try:
        app = create_app()
        with app.app_context():
            problem = startup_problem()
    except SettingsError as error:
        _refuse(error, 2)
    except SchemaMismatch as error:  # create_app checks a SQLite database's revision itself
        _refuse(error, 1)
    if problem:
        _refuse(problem, 1)
    logs.configure()  # after the imports, whose own set-up lines (alembic's) are not news
    gc.freeze()  # as in each gunicorn worker (load_frozen)
    return app


def _refuse(problem, status: int):
    print(f"error: {problem}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def _when_ready(server) -> None:
    addresses = ", ".join(str(listener) for listener in server.LISTENERS)
    log.info("serving on %s: %d worker process(es) x %d threads (gunicorn %s, master pid %d)",
             addresses, server.cfg.workers, server.cfg.threads, server.cfg.worker_class_str,
             os.getpid())


def _worker_exit(_server, worker) -> None:
    """A worker stops (SIGTERM, HUP reload, max-requests): write what it still holds — the
    queued "last used" times of keys."""
    app = getattr(worker, "wsgi", None)
    if getattr(app, "extensions", {}).get("serva.key_touches") is not None:
        try:
            from .auth import flush_key_uses
            flush_key_uses(app)
        except Exception:  # noqa: BLE001 - the worker is going away either way
            log.exception("worker %d could not flush key use times", os.getpid())


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
        "accesslog": None,  # the app writes the access line (serva.access), with the request id
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
    moved out of the garbage collector's generations (`gc.freeze`): it lives as long as the
    process, yet every full collection would walk all of it, pausing every thread. Frozen
    objects are never collected; what startup leaves behind is kept once."""
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


def _app_loader():
    """How each worker makes its app after the fork: as the command line made the master's
    (flask.cli.ScriptInfo: `serva`'s factory, or `flask --app …`'s), made anew."""
    made = click.get_current_context().ensure_object(ScriptInfo)
    return lambda: ScriptInfo(made.app_import_path, made.create_app).load_app()


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
    logs.configure()
    problem = startup_problem()
    if problem:
        raise click.ClickException(problem)
    run(_app_loader(), gunicorn_options(host, port, workers, threads, timeout, max_requests))


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
    logs.configure()
    sys.path.insert(0, os.getcwd())
    run(lambda: _import_app(args.app), gunicorn_options(args.host, args.port, args.workers,
                                                        args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
