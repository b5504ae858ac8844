"""The Celery wiring: the app, the broker connection, the message guard, logging and Sentry, the scheduler bootstep."""
