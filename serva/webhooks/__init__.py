"""Webhooks after Standard Webhooks 1.0: the partner's endpoint (endpoints), the events written
in the transaction of the change they report (outbox), where a destination may point
(addresses), one signed POST (transport), and the worker's delivery with retries (delivery).
Nothing is imported here, so that the modules that write events (orders, refills) import
only the outbox."""
