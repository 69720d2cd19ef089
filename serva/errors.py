"""The API's error table: one stable code, one message each (docs/CONTRACT.md, Errors)."""

MESSAGES = {
    "missing_key": "API key is required",
    "invalid_key": "Invalid API key",
    "ambiguous_key": "Conflicting API keys in one request",
    "key_revoked": "API key has been revoked",
    "api_access_not_approved": "API access is not approved for this account",
    "account_banned": "Account is banned",
    "account_on_hold": "Account is on hold: a payment was taken back; contact the operator",
    "unknown_action": "Incorrect request",
    "ambiguous_action": "Conflicting actions in one request",
    "invalid_request": "Incorrect request: {detail}",
    "missing_parameter": "Missing required parameter: {name}",
    "service_unavailable": "Incorrect service ID",
    "invalid_link": "Incorrect link",
    "invalid_quantity": "Incorrect quantity",
    "quantity_below_min": "Quantity less than minimal {min}",
    "quantity_above_max": "Quantity more than maximum {max}",
    "invalid_fields": "Invalid fields: {detail}",
    "invalid_coupon": "Invalid coupon",
    "insufficient_balance": "Not enough funds on balance",
    "duplicate_target": "Duplicate order for this target is blocked",
    "active_order_exists": "You have active order with this link. Please wait until order being completed.",
    "idempotency_conflict": "Idempotency key was already used with different parameters",
    "order_not_found": "Incorrect order ID",
    "too_many_orders": "Too many orders in one request (max {max})",
    "rate_limited": "Too many requests, retry after {seconds} s",
    "busy": "Service temporarily unavailable, retry after {seconds} s",
    "dripfeed_not_available": "Drip-feed is not available for this service",
    "invalid_runs": "Incorrect runs",
    "invalid_interval": "Incorrect interval",
    "refill_not_available": "Refill is not available for this order: {reason}",
    "refill_not_found": "Refill not found",
    "cancel_not_available": "Cancel is not available for this order",
}

# Transport-level failures keep real statuses (docs/CONTRACT.md, Transport) and say when to retry.
HTTP_STATUS = {"rate_limited": 429, "busy": 503}

# When each public code is answered, for people (the public page's error table).
WHEN = {
    "missing_key": "No key in the body, the query string, x-api-key or Authorization: Bearer.",
    "invalid_key": "The key does not exist or is malformed.",
    "ambiguous_key": "Different keys in different places of one request.",
    "key_revoked": "The key exists but was revoked (rotated or revoked in the dashboard).",
    "api_access_not_approved": "The account is not approved for API use yet.",
    "account_banned": "The account is banned.",
    "account_on_hold": "`add` only: a payment to the account was refunded or disputed for more "
                       "than its balance held; orders are refused until what is owed is "
                       "settled (a top-up settles it first). Other actions still work.",
    "unknown_action": "The action is missing or not one of the supported actions.",
    "ambiguous_action": "`action` repeated with different values in the query string or in the "
                        "body (the same value twice is fine; the body's wins over the query's).",
    "invalid_request": "The request cannot be read: a body that is neither a form nor JSON, "
                       "text that is not valid Unicode, a list where one id belongs, or `runs` / "
                       "`interval` that is not a whole number.",
    "missing_parameter": "A parameter the action needs is absent or empty; the message names "
                         "it (`orders` when the `orders` sent names no id).",
    "service_unavailable": "The service id is unknown or the service is not active.",
    "invalid_link": "The link is not an absolute http(s) URL.",
    "invalid_quantity": "The quantity is not a whole number, is outside min..max, or disagrees "
                        "with the quantity the service sets.",
    "invalid_fields": "The manual fields are malformed, unknown or missing.",
    "invalid_coupon": "The coupon is unknown, expired, used up or does not apply.",
    "insufficient_balance": "The charge is above the balance.",
    "duplicate_target": "The purchase guard blocked a repeat of the same service, target and "
                        "quantity within its window.",
    "active_order_exists": "An order for the same service and target is still active.",
    "idempotency_conflict": "An idempotency key was reused with a different request.",
    "order_not_found": "The order does not exist or is another account's.",
    "too_many_orders": "More than 100 ids in one request.",
    "dripfeed_not_available": "`runs` above 1 on a service without drip-feed, or `runs` / "
                              "`interval` out of range.",
    "refill_not_available": "The service has no refill, the order is not Completed or Partial, "
                            "its refill window is over, or a refill of it is still pending.",
    "refill_not_found": "The refill does not exist or is another account's.",
    "cancel_not_available": "The service has no cancel, or the order is no longer active.",
    "rate_limited": "HTTP 429: too many requests for this key, or too many failed keys from "
                    "this address; retry after the Retry-After seconds.",
    "busy": "HTTP 503: the server could not write in time (busy, or its disk is full or "
            "read-only). Nothing was charged; retry after the Retry-After seconds.",
}

# Quantity errors share the public code `invalid_quantity`; the message says which bound.
# Likewise drip-feed's range errors share `dripfeed_not_available`.
PUBLIC_CODE = {"quantity_below_min": "invalid_quantity", "quantity_above_max": "invalid_quantity",
               "invalid_runs": "dripfeed_not_available", "invalid_interval": "dripfeed_not_available"}


class ApiError(Exception):
    """An error of the API: rendered as {"error", "code"} by the endpoint, with HTTP 200, or the
    transport-level status and a Retry-After of `seconds`."""

    def __init__(self, code: str, **details):
        self.code = PUBLIC_CODE.get(code, code)
        self.message = MESSAGES[code].format(**details)
        self.status = HTTP_STATUS.get(code, 200)
        self.retry_after = details.get("seconds") if code in HTTP_STATUS else None
        super().__init__(self.message)

    def body(self) -> dict:
        return {"error": self.message, "code": self.code}
