"""Entry point for ``celery -A workers.celery_app worker``: settings are built here, from the env."""

from imagequeue.settings import Settings
from workers.app import make_celery

app = make_celery(Settings())
