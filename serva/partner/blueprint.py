"""The partner pages' blueprint, under /profile/ like the dashboard and guarded by the same
hooks: the CSRF check of every POST, the sign-out of a banned partner, private-page headers."""
import csv
import io
import re
from datetime import date, datetime, timezone

from flask import Blueprint, Response, stream_with_context
from flask_wtf.csrf import CSRFError

from .. import dashboard

bp = Blueprint("partner", __name__, url_prefix="/profile")
bp.before_request(dashboard.check_csrf)
bp.before_request(dashboard.sign_out_banned)
bp.after_request(dashboard.private_pages)
bp.register_error_handler(CSRFError, dashboard.csrf_failed)

PAGE_SIZE = 50
CSV_CHUNK = 1000
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: a partner's link such as `=HYPERLINK(…)` is not
    run as a formula (numbers, negative amounts included, stay numbers)."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_response(filename: str, header, chunks) -> Response:
    """A CSV download streamed from `chunks` (lists of rows, read a chunk at a time)."""
    def generate():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for rows in chunks:
            for row in rows:
                writer.writerow([cell(value) for value in row])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()
    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def iso_time(stamp) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_start(text):
    """'2026-12-07' -> the unix second that day begins (UTC); None for empty; ValueError."""
    if not text:
        return None
    day = date.fromisoformat(text.strip())
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


def cursor(text):
    """A keyset cursor (a row id) from the query string; None when absent or not one."""
    return int(text) if text and text.isdigit() and len(text) < 12 else None
