"""Celery tasks: ``relay.drain`` (deliver), ``relay.enqueue`` (ingest) and ``relay.admin``."""
