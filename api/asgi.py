"""Entry point for ``uvicorn api.asgi:app``: settings are built here, from the environment."""

from api.app import create_app

app = create_app()
