"""The activity table: every change an operator makes, in the console or the CLI.

`record` is called by both faces right after the domain function that made the change, on the
same connection, so the entry commits with the change or not at all: there is no change
without its entry and no entry for a change that rolled back. Who: `operator:EMAIL` for the
console, `cli` for a command; the request id is the console request's or the command's."""
import json

from sqlalchemy import insert, or_, select

from .db import now
from .request_ids import request_id
from .schema import activity

CLI = "cli"
PAGE = 50


def operator_actor(email: str) -> str:
    return f"operator:{email}"


def _json(value):
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def record(conn, actor: str, action: str, subject, before=None, after=None) -> None:
    conn.execute(insert(activity).values(
        created_at=now(), actor=actor[:270], action=action[:64], subject=str(subject)[:255],
        before_json=_json(before), after_json=_json(after), request_id=request_id()))


def search(conn, q: str = "", before_id: int | None = None, limit: int = PAGE):
    """Newest first; `q` matches the actor, action, subject or request id (a substring)."""
    query = select(activity).order_by(activity.c.id.desc()).limit(limit)
    if q:
        pattern = f"%{q.strip()}%"
        query = query.where(or_(activity.c.actor.like(pattern), activity.c.action.like(pattern),
                                activity.c.subject.like(pattern),
                                activity.c.request_id == q.strip()))
    if before_id is not None:
        query = query.where(activity.c.id < before_id)
    return conn.execute(query).all()
