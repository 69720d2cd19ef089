"""How the console shows values: times in UTC, money in the deployment's currency, ids as the
partners see them; registered as Jinja filters for the console's templates."""
from datetime import datetime, timezone

from ..ids import present_order, present_refill
from ..money import format_amount, format_percent
from ..payments import present_payment


def utc_time(stamp) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def money(amount) -> str:
    return "-" if amount is None else format_amount(amount)


FILTERS = {"when": utc_time, "money": money, "order_id": present_order,
           "refill_id": present_refill, "payment_id": present_payment, "percent": format_percent}
