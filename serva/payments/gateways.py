"""The one interface every way of paying implements, and the ways this deployment offers.

A gateway says what it is called, whether a payment needs the partner's reference, the id it
knows a payment by before it is asked (`claim`), and how the partner is sent on (`start`).
How money is confirmed is the gateway's own: Stripe's verified webhook, the operator's
`serva payment approve` for a manual one; both end in `records.credit`, the one way a
payment is credited."""
from dataclasses import dataclass

from ..money import format_amount

MAX_REFERENCE_LENGTH = 120


@dataclass(frozen=True)
class Started:
    """What `start` did: the gateway's id for the payment (None: known already) and where
    the partner's browser goes next (None: back to the payment's page, to wait)."""
    gateway_id: str | None
    redirect_url: str | None


class Gateway:
    """One way money comes in. Subclasses set the names and implement `start`."""

    name = ""  # stored in payments.gateway
    label = ""  # shown to partners
    needs_reference = False

    def claim(self, account_id: int, reference: str | None) -> str | None:
        """The payment's gateway id when Serva knows it before asking the gateway."""
        return None

    def check_amount(self, amount: int) -> str | None:
        """Why the gateway cannot take this amount, or None."""
        return None

    def start(self, payment, return_url: str, email: str) -> Started:
        raise NotImplementedError


class Manual(Gateway):
    """An off-line payment (a bank transfer, or whatever the operator's instructions name):
    the partner says how much and with which reference, and the operator, having seen the
    money arrive, approves or rejects it. The reference is the payment's id at this gateway,
    per account, so the same transfer cannot be submitted twice."""

    name = "manual"
    label = "Bank transfer or other off-line payment"
    needs_reference = True

    def __init__(self, instructions: str):
        self.instructions = instructions

    def claim(self, account_id, reference):
        return f"{account_id}/{reference}"

    def start(self, payment, return_url, email):
        return Started(gateway_id=None, redirect_url=None)


def clean_reference(text) -> str | None:
    """A partner's reference as stored: trimmed, one line, at most MAX_REFERENCE_LENGTH."""
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    return text if 0 < len(text) <= MAX_REFERENCE_LENGTH and text.isprintable() else None


def amount_problem(amount: int, minimum: int, maximum: int, currency: str) -> str | None:
    """Why a top-up of `amount` is refused by the deployment's bounds, or None."""
    if amount < minimum:
        return f"The smallest top-up is {format_amount(minimum)} {currency}."
    if amount > maximum:
        return f"The largest top-up is {format_amount(maximum)} {currency}."
    return None
