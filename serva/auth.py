"""The key resolver: where an API request's key comes from and what it may do.

A key may arrive in the body, the query string, `x-api-key` or `Authorization: Bearer`; all
of them must agree. Errors come in the contract's order: missing, invalid, revoked, banned,
not approved."""
from flask import current_app, request

from . import db, keys
from .errors import ApiError


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def raw_key(body_keys) -> str:
    """The one key this request carries, from any of the four places."""
    found = [*body_keys, *request.args.getlist("key"), request.headers.get("X-Api-Key"), _bearer()]
    distinct = {k.strip() if isinstance(k, str) else repr(k) for k in found if k is not None}
    distinct.discard("")
    if not distinct:
        raise ApiError("missing_key")
    if len(distinct) > 1:
        raise ApiError("ambiguous_key")
    return distinct.pop()


def authenticate(body_keys):
    """The key+account row of the caller; raises the first applicable auth error."""
    raw = raw_key(body_keys)
    if not keys.looks_like_key(raw):
        raise ApiError("invalid_key")
    with db.read() as conn:
        row = keys.find_key(conn, raw)
    if row is None:
        raise ApiError("invalid_key")
    if row.revoked_at is not None:
        raise ApiError("key_revoked")
    if row.banned:
        raise ApiError("account_banned")
    if row.api_access != "approved":
        raise ApiError("api_access_not_approved")
    interval = current_app.config["KEY_LAST_USED_INTERVAL"]
    if row.last_used_at is None or db.now() - row.last_used_at >= interval:
        _touch(row.key_id, interval)
    return row


def _touch(key_id, interval):
    """Best effort: a busy database must not fail the partner's request over a timestamp."""
    try:
        with db.write() as conn:
            keys.touch_key(conn, key_id, interval)
    except Exception:  # noqa: BLE001 - logged, never raised
        current_app.logger.warning("could not record key use", exc_info=True)
