"""Fulfilment: orders handed over to upstream providers, and what the providers then do.

- `claim`: hand-overs claimed under a lease, released, reaped when their worker died;
- `dispatch`: an order's `add` sent, its reply read, the outcome recorded; the operator's
  resolution of an outcome that is unknown;
- `sync`: the status of accepted orders polled and applied;
- `forwarding`: refill and cancel requests handed to the provider, its refills polled;
- `attempts`: every call about a hand-over kept, with the provider's reply (key masked);
- `replies`: what a provider's words mean (the one status map, refusals for now, counts);
- `provider_client`: the one place that talks HTTP to providers; `simulated`: `sim://`;
- `runner`: the pass, and the loop of passes (`serva worker`)."""
from .attempts import attempts_of
from .dispatch import ResolveError, idempotency_key, resolve
from .runner import Report, run_forever, run_pass, settings

__all__ = ["Report", "ResolveError", "attempts_of", "idempotency_key", "resolve", "run_forever",
           "run_pass", "settings"]
