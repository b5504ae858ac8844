"""Guards in front of Celery for messages any program may send.

Celery 5.7 trusts the shape of a task message: a ``task`` header that is not a string (a list:
``TypeError: unhashable type``), or a JSON body that is a string, a number, ``null`` or a list of
the wrong length (``ValueError: too many values to unpack``), raises in the worker's main
process, which stops the worker, and the unacknowledged message comes back to stop the next
one.  Anyone who can write to ``relay.ingest`` can send such a message.

:class:`GuardedConsumer` (the worker's ``worker_consumer``) refuses, before Celery reads it, a
message that is not Celery protocol 2: headers without a ``task`` name, headers not of the types
Celery reads them as (``id`` a string, ``retries`` a number, ...), or a body that is not
``[args, kwargs, embed]`` in JSON and UTF-8, or a body nested deeper than
:data:`MAX_MESSAGE_DEPTH` (the JSON decoder takes close to a thousand levels, but the worker
pickles a task's arguments for its pool, and a few hundred levels overflow the stack there and
stop the consumer).  Each refusal is one log line without the body (it may hold personal data);
the message is dropped.  Content types the worker does not accept
(pickle) are left to Celery, which refuses them itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError

log = logging.getLogger("conversion_relay.guard")

_TASK_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Most levels of lists and objects in a message body.  A body wraps its events in three
#: (``[args, kwargs, embed]``, the args, the list of events), and an event may itself be 16 deep
#: (:data:`conversion_relay.schemas.untrusted.MAX_DEPTH`): a deeper one is refused by the task
#: with a message naming the field; only bodies no event could justify are dropped here.
MAX_MESSAGE_DEPTH = 64
_NONE = type(None)
#: The protocol 2 headers Celery's worker reads, and the types it can read them as.
HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,),
    "id": (str,),
    "root_id": (str, _NONE),
    "parent_id": (str, _NONE),
    "group": (str, _NONE),
    "group_index": (int, _NONE),
    "lang": (str, _NONE),
    "shadow": (str, _NONE),
    "origin": (str, _NONE),
    "argsrepr": (str, _NONE),
    "kwargsrepr": (str, _NONE),
    "eta": (str, _NONE),
    "expires": (str, _NONE),
    "retries": (int,),
    "timelimit": (list, tuple, _NONE),
    "ignore_result": (bool, _NONE),
    "replaced_task_nesting": (int, _NONE),
    "stamped_headers": (list, tuple, _NONE),
    "stamps": (dict, _NONE),
    "groups": (list, tuple, _NONE),
}


def header_problem(headers: Any) -> str | None:
    """What is wrong with a message's headers, or None."""
    if not isinstance(headers, dict) or "task" not in headers:
        return "it has no task header (Celery protocol 2)"
    for name, types in HEADER_TYPES.items():
        if name not in headers:
            continue
        value = headers[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"its {name} header is not {' or '.join(t.__name__ for t in types)}"
    if nested_deeper_than(headers, MAX_MESSAGE_DEPTH):
        return f"its headers are nested deeper than {MAX_MESSAGE_DEPTH} levels of lists and objects"
    limits = headers.get("timelimit")
    if limits is not None and (len(limits) != 2 or not all(isinstance(v, (int, float, _NONE)) for v in limits)):
        return "its timelimit header is not [soft, hard]"
    return None


class GuardedConsumer(Consumer):
    """Celery's consumer, refusing a message it would crash on."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            problem = header_problem(message.headers) or body_problem(message)
            if problem is None:
                return handle(message)
            headers = message.headers if isinstance(message.headers, dict) else {}
            task_id = headers.get("id")
            shown = task_id if isinstance(task_id, str) and _TASK_ID.fullmatch(task_id) else "without a readable id"
            log.error(
                "A message %s was refused and dropped: %s. Send Celery protocol 2 messages with a JSON "
                "body (docs/producer.md).",
                shown,
                problem,
            )
            message.reject_log_error(log, self.connection_errors)
            return None

        return on_task_received


def body_problem(message: Any) -> str | None:
    """What is wrong with a message's body, or None for ``[list, dict, dict or null]``."""
    try:
        payload = message.payload
    except DecodeError:
        return "its body is not JSON in UTF-8"
    except ContentDisallowed:
        return None  # Celery refuses it, naming the content type
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        return "its body is not [args, kwargs, embed] (Celery protocol 2)"
    args, kwargs, embed = payload
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) or not isinstance(embed, (dict, type(None))):
        return "its body is not [args (a list), kwargs (an object), embed (an object or null)]"
    if nested_deeper_than(payload, MAX_MESSAGE_DEPTH):
        return f"its body is nested deeper than {MAX_MESSAGE_DEPTH} levels of lists and objects"
    return None


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` holds more than ``limit`` levels of lists and objects (itself counted).

    Walked with a stack of its own rather than by recursion: the value may be nested almost as
    deep as Python's recursion limit.
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False
