"""The Celery app (`celery -A worker ...` finds it here), bound to the Flask app for config and database."""

from web import create_app

flask_app = create_app()
app = flask_app.extensions["celery"]
