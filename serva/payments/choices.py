"""Which gateways this deployment offers: the settings turn each one on."""
from .gateways import Manual
from .stripe_checkout import StripeCheckout


def offered(config) -> dict:
    """{name: gateway} in the order the partner sees them: Stripe Checkout when there is a
    Stripe key (none: the option is simply absent), manual when the operator wrote how to
    pay off-line."""
    gateways = {}
    if config["STRIPE_SECRET_KEY"]:
        gateways["stripe"] = StripeCheckout(config)
    if config["MANUAL_PAYMENTS"].strip():
        gateways["manual"] = Manual(config["MANUAL_PAYMENTS"].strip())
    return gateways
