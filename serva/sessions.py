"""Dashboard sessions kept on the server, so that signing out ends a session for good.

Flask's session is a signed cookie: whoever holds a copy can use it until it expires, and
clearing it in one browser does nothing to the copy. So each sign-in also makes a row here
(a random token, stored only as its SHA-256 hash, like API keys) and the cookie carries the
token as Flask-Login's user id. The user loader accepts a cookie only while its row is
unrevoked and younger than the session lifetime: signing out revokes that one row, "sign out
everywhere" every row of the account, and rotating the key or changing the password every
row but the current one.
"""
import hashlib
import secrets

from sqlalchemy import delete, func, insert, select, update

from .db import now
from .schema import accounts, dashboard_sessions


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn, account_id: int) -> str:
    """A new session of the account; returns the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    conn.execute(insert(dashboard_sessions).values(
        account_id=account_id, token_hash=_hash(token), created_at=now()))
    return token


def account_for(conn, token, lifetime: int):
    """The account row of a live session (with the session's id as `session_id`), or None."""
    if not isinstance(token, str) or not token:
        return None
    return conn.execute(
        select(accounts, dashboard_sessions.c.id.label("session_id"))
        .join(accounts, accounts.c.id == dashboard_sessions.c.account_id)
        .where(dashboard_sessions.c.token_hash == _hash(token),
               dashboard_sessions.c.revoked_at.is_(None),
               dashboard_sessions.c.created_at > now() - lifetime)).first()


def revoke(conn, session_id: int) -> None:
    conn.execute(update(dashboard_sessions)
                 .where(dashboard_sessions.c.id == session_id,
                        dashboard_sessions.c.revoked_at.is_(None))
                 .values(revoked_at=now()))


def revoke_all(conn, account_id: int, keep: int | None = None) -> int:
    """Revoke every live session of the account except `keep`; the number revoked."""
    condition = [dashboard_sessions.c.account_id == account_id,
                 dashboard_sessions.c.revoked_at.is_(None)]
    if keep is not None:
        condition.append(dashboard_sessions.c.id != keep)
    return conn.execute(update(dashboard_sessions).where(*condition)
                        .values(revoked_at=now())).rowcount


def prune(conn, lifetime: int) -> int:
    """Delete revoked and expired sessions (they can never be used again)."""
    return conn.execute(delete(dashboard_sessions).where(
        dashboard_sessions.c.revoked_at.is_not(None)
        | (dashboard_sessions.c.created_at <= now() - lifetime))).rowcount


def live_count(conn, account_id: int, lifetime: int) -> int:
    return conn.execute(select(func.count()).select_from(dashboard_sessions).where(
        dashboard_sessions.c.account_id == account_id,
        dashboard_sessions.c.revoked_at.is_(None),
        dashboard_sessions.c.created_at > now() - lifetime)).scalar()
