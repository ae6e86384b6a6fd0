"""Celery workers: CNN inference, scheduled retraining and maintenance. The Celery app is `worker.celery`."""
