"""Development entry point: `flask --app app run --debug` (same as `flask --app serva`)."""
from serva import create_app

app = create_app()
