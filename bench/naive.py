"""The baseline: a naive relay, one Celery task and one ``requests.post`` per event.

This is how a relay is usually first written: the web app validates, then ``deliver.delay()``;
the worker posts the single event.  JSON serialisation, Celery's defaults otherwise.

    celery -A bench.naive worker      # with NAIVE_BROKER_URL and NAIVE_SINK_URL set
"""

from __future__ import annotations

import os
from typing import Any

import requests
from celery import Celery

app = Celery("naive", broker=os.environ["NAIVE_BROKER_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue="naive",
    broker_connection_retry_on_startup=True,
)


@app.task(name="naive.deliver")
def deliver(event: dict[str, Any]) -> None:
    response = requests.post(
        os.environ["NAIVE_SINK_URL"] + "/gateway/events",
        json={"data": [event]},
        headers={"Authorization": "Bearer bench-key"},
        timeout=10,
    )
    response.raise_for_status()
