"""The web console (``conversion-relay console``): destination status and dead letters in a browser

Server-rendered by a small WSGI app on the standard library, so there is nothing to build and
nothing to keep up to date besides Python: :mod:`.app` routes requests, :mod:`.pages` renders
them (every value escaped), :mod:`.guard` holds the access token and the CSRF check, :mod:`.forms`
reads filters, and :mod:`.server` serves it on loopback unless an access token is set.
"""

from conversion_relay.console.app import ConsoleApp
from conversion_relay.console.guard import Guard, check_bind
from conversion_relay.console.server import ConsoleServer

__all__ = ["ConsoleApp", "ConsoleServer", "Guard", "check_bind"]
