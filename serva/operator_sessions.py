"""Console sessions kept on the server, as the dashboard's are (serva/sessions.py): the console
cookie carries a random token, a row here its hash. A session ends on sign-out, when its
operator is disabled or changes password, and after the idle limit without a request; until
`verified_at` is set it has passed the password only, which opens nothing but the second
factor's pages."""
import hashlib
import secrets

from sqlalchemy import insert, select, update

from .db import now
from .schema import operator_sessions, operators

TOUCH_EVERY = 30  # seconds: the idle clock is written at most this often per session


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn, operator_id: int, verified: bool = False) -> str:
    """A new session; returns the token for the cookie (never stored). `verified`: no second
    factor is asked of this operator."""
    token = secrets.token_urlsafe(32)
    stamp = now()
    conn.execute(insert(operator_sessions).values(
        operator_id=operator_id, token_hash=_hash(token), created_at=stamp, seen_at=stamp,
        verified_at=stamp if verified else None))
    return token


def find(conn, token, idle_seconds: int):
    """The operator of a live session, with `session_id`, `verified_at` and `seen_at`; None for
    an unknown, ended, idle or disabled one."""
    if not isinstance(token, str) or not token:
        return None
    return conn.execute(
        select(operators, operator_sessions.c.id.label("session_id"),
               operator_sessions.c.verified_at, operator_sessions.c.seen_at)
        .join(operators, operators.c.id == operator_sessions.c.operator_id)
        .where(operator_sessions.c.token_hash == _hash(token),
               operator_sessions.c.revoked_at.is_(None),
               operator_sessions.c.seen_at > now() - idle_seconds,
               operators.c.disabled.is_(False))).first()


def touch(conn, session_id: int) -> None:
    stamp = now()
    conn.execute(update(operator_sessions)
                 .where(operator_sessions.c.id == session_id,
                        operator_sessions.c.seen_at <= stamp - TOUCH_EVERY)
                 .values(seen_at=stamp))


def mark_verified(conn, session_id: int) -> None:
    conn.execute(update(operator_sessions).where(operator_sessions.c.id == session_id)
                 .values(verified_at=now()))


def revoke(conn, session_id: int) -> None:
    conn.execute(update(operator_sessions)
                 .where(operator_sessions.c.id == session_id,
                        operator_sessions.c.revoked_at.is_(None))
                 .values(revoked_at=now()))
