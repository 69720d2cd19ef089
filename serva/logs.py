"""Where Serva's log lines go: stderr, one line per record, through the standard library.

`configure()` is called once per process by whatever runs Serva — `serva serve` (before
gunicorn forks its workers, which inherit it), `wsgi.py` (waitress) and `serva worker` — so
a systemd unit's journal, a container's log collector or `make run`'s terminal gets the same
lines. logging's StreamHandler writes and flushes each record as it is made: an access line
is out before its answer leaves, so a partner quoting a request id finds it after a crash.
"""
import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: int = logging.INFO) -> None:
    """INFO and up from every logger on stderr (the access log is `serva.access`). A process
    whose root logger already has handlers (an operator's own setup) keeps them."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    # What the format never shows is not gathered for every record (logging's documented
    # optimization flags).
    logging.logThreads = logging.logMultiprocessing = False  # gunicorn's own lines show the pid
