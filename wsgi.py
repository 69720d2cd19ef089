"""The app for waitress (`make run`; Windows, where gunicorn does not run):

    waitress-serve --listen=127.0.0.1:8000 --no-clear-untrusted-proxy-headers wsgi:app

`serva serve` is the production server everywhere else. The app is checked before it
serves (serva.serve.checked_app): a bad setting is one line and exit status 2; a database not
prepared by `serva init-db`, on another schema revision or not writable, one line and 1.
`--no-clear-untrusted-proxy-headers` lets X-Forwarded-* through to the app, where
SERVA_TRUSTED_PROXIES decides whether they are believed (waitress 3 drops them otherwise)."""
from serva import create_app
from serva.serve import checked_app

app = checked_app(create_app)
