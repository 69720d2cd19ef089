"""Coupons: a percentage or a fixed amount off one order's charge, within a validity window,
total and per-account limits, an optional minimum charge and a service or category scope.
A coupon that does not apply is an error (`invalid_coupon`), never silently ignored."""
from sqlalchemy import func, insert, select, update

from .db import now
from .errors import ApiError
from .money import BASIS_POINTS, RATE_UNITS, div_half_up
from .schema import coupon_redemptions, coupons, services


def normalize_code(code: str) -> str:
    return code.strip().upper()


def get(conn, code: str):
    return conn.execute(select(coupons).where(coupons.c.code == normalize_code(code))).first()


def price(rate: int, units: int, coupon) -> tuple[int, int]:
    """(charge, discount) for `units` at `rate` per 1000, with the coupon if any, rounded once."""
    base = div_half_up(rate * units, RATE_UNITS)
    if coupon is None:
        return base, 0
    if coupon.kind == "percent":
        charge = div_half_up(rate * units * (BASIS_POINTS - coupon.value), RATE_UNITS * BASIS_POINTS)
    else:
        charge = max(0, base - coupon.value)
    return charge, base - charge


def applicable(conn, code: str, account_id: int, service, base_charge: int, stamp: int):
    """The coupon row if it may be used on this order now, else ApiError('invalid_coupon')."""
    coupon = get(conn, code)
    if coupon is None or not coupon.active:
        raise ApiError("invalid_coupon")
    if coupon.starts_at is not None and stamp < coupon.starts_at:
        raise ApiError("invalid_coupon")
    if coupon.expires_at is not None and stamp >= coupon.expires_at:
        raise ApiError("invalid_coupon")
    if coupon.max_uses is not None and coupon.uses >= coupon.max_uses:
        raise ApiError("invalid_coupon")
    if coupon.service_id is not None and coupon.service_id != service.id:
        raise ApiError("invalid_coupon")
    if coupon.category is not None and coupon.category != service.category:
        raise ApiError("invalid_coupon")
    if base_charge < coupon.min_charge:
        raise ApiError("invalid_coupon")
    return coupon


def redeem(conn, coupon, account_id: int, order_id: int, discount: int) -> None:
    """Count one use, inside the order's transaction; the limits are re-checked by the UPDATE
    and by counting after the account's row is locked, so concurrent orders cannot overrun them."""
    used = conn.execute(update(coupons)
                        .where(coupons.c.id == coupon.id,
                               (coupons.c.max_uses.is_(None)) | (coupons.c.uses < coupons.c.max_uses))
                        .values(uses=coupons.c.uses + 1)).rowcount
    if not used:
        raise ApiError("invalid_coupon")
    if coupon.per_account_limit is not None:
        mine = conn.execute(select(func.count()).select_from(coupon_redemptions)
                            .where(coupon_redemptions.c.coupon_id == coupon.id,
                                   coupon_redemptions.c.account_id == account_id)).scalar()
        if mine >= coupon.per_account_limit:
            raise ApiError("invalid_coupon")
    conn.execute(insert(coupon_redemptions).values(coupon_id=coupon.id, account_id=account_id,
                                                   order_id=order_id, discount=discount,
                                                   created_at=now()))


def create(conn, code: str, kind: str, value: int, **options) -> int:
    if kind not in ("percent", "fixed"):
        raise ValueError("kind must be percent or fixed")
    code = normalize_code(code)
    if not code or len(code) > 64:
        raise ValueError("a coupon code needs 1 to 64 characters")
    if get(conn, code) is not None:
        raise ValueError(f"coupon {code} already exists")
    service_id = options.get("service_id")
    if service_id is not None and conn.execute(
            select(services.c.id).where(services.c.id == service_id)).first() is None:
        raise ValueError(f"no service with id {service_id}")
    starts, expires = options.get("starts_at"), options.get("expires_at")
    if starts is not None and expires is not None and expires <= starts:
        raise ValueError("the coupon must expire after it starts")
    return conn.execute(insert(coupons).values(code=code, kind=kind, value=value, created_at=now(),
                                               **options)).inserted_primary_key[0]


def disable(conn, code: str) -> bool:
    return conn.execute(update(coupons).where(coupons.c.code == normalize_code(code))
                        .values(active=False)).rowcount > 0


def list_all(conn):
    return conn.execute(select(coupons).order_by(coupons.c.id)).all()
