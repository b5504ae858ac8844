"""What every ``conversion-relay`` command shares: exit statuses, one-line errors, time and limit
options, and talking to Redis.

An operator reads these messages at 3 a.m., and scripts read the exit status, so every failure
ends as one line on stderr that names the option or setting, what is wrong and what to do, and
no failure ever ends as a traceback (``--debug`` shows one for an unexpected error).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from conversion_relay.errors import ConfigurationError, RelayError
from conversion_relay.outcomes import dead_letter_reason
from conversion_relay.store.connection import redis_location
from conversion_relay.store.selection import parse_when

if TYPE_CHECKING:
    import redis

    from conversion_relay.config.settings import Settings

PROG = "conversion-relay"

#: Exit statuses: 1 refused or not found, 2 configuration or usage, 3 Redis out of reach or unusable.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REDIS_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

#: Problems shown of an error that lists many (invalid fields of a large file, say).
MAX_PROBLEMS = 20


def destinations_option(verb: str, default: str) -> Callable[[Any], Any]:
    """``--destination NAME`` (repeatable) of the commands that take events: ``enqueue``, ``explain``."""
    return click.option(
        "--destination",
        "destinations",
        multiple=True,
        metavar="NAME",
        help=f"{verb} for this destination only; repeat for more. Default: {default}.",
    )


class CliError(click.ClickException):
    """A failure the command explains itself: printed as ``conversion-relay: <message>``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(message: str) -> str:
    """An error of several lines (a field per line) as one line, so that every error is one line
    on stderr; past :data:`MAX_PROBLEMS` problems the rest is counted, not listed."""
    parts = [line.strip() for line in message.splitlines() if line.strip()]
    if len(parts) > MAX_PROBLEMS + 1:
        parts = parts[: MAX_PROBLEMS + 1] + [f"and {len(parts) - MAX_PROBLEMS - 1} more"]
    if len(parts) <= 1:
        return parts[0] if parts else "failed"
    return "; ".join(part.rstrip(".;") for part in parts) + "."


class When(click.ParamType):
    """``--since`` / ``--until``: a time as :func:`parse_when` reads it."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_when(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class ReasonName(click.ParamType):
    """``--reason``: a dead-letter reason; a misspelt one would select nothing, so it is refused
    with the valid ones listed."""

    name = "reason"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return dead_letter_reason(str(value))
        except ValueError as exc:
            self.fail(str(exc).removeprefix("reason: "), param, ctx)


class Limit(click.ParamType):
    """``--limit``: a whole number of entries, 1 or more (0 used to touch one entry)."""

    name = "n"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number; give how many entries at most, e.g. 100.", param, ctx)
        if number < 1:
            self.fail(f"{number} is below 1; give 1 or more, or leave --limit out for every entry.", param, ctx)
        return number


def load() -> Settings:
    """The settings from the environment; a bad configuration is a ConfigurationError (exit 2)."""
    from conversion_relay.config.settings import load_settings

    return load_settings()


def connect_client(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``; a URL redis-py cannot use is a usage error, not a traceback."""
    from conversion_relay.store.connection import connect

    try:
        return connect(url, **options)
    except ValueError as exc:
        message = str(exc)
        password = _password(url)
        if password:
            message = message.replace(password, "***")
        raise CliError(
            f"the Redis URL (REDIS_URL or relay.redis_url) is not usable: {message.rstrip('.')}; "
            "write it as redis://host:6379/0, rediss://... or unix:///path/to/redis.sock.",
            EXIT_USAGE,
        ) from None


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Turn every way Redis can fail a command into one line and exit status 3."""
    import redis

    where = redis_location(url)

    def fail(what: str, exc: Exception, hint: str = "check REDIS_URL.") -> CliError:
        return CliError(f"{what} ({type(exc).__name__}); {hint}", EXIT_REDIS_UNREACHABLE)

    try:
        yield
    except redis.AuthenticationError as exc:  # a ConnectionError to redis-py, but Redis is there
        raise fail(f"Redis at {where} refused the credentials", exc) from None
    except redis.BusyLoadingError as exc:
        raise fail(f"Redis at {where} is loading its data", exc, "try again in a moment.") from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise fail(f"cannot reach Redis at {where}", exc, "is it running? check REDIS_URL.") from None
    except redis.exceptions.InvalidResponse as exc:
        raise fail(f"what answers at {where} is not Redis", exc) from None
    except redis.RedisError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "an error"
        hint = "check REDIS_URL (the database number) and the Redis user's rights."
        raise fail(f"Redis at {where} answered {detail!r}", exc, hint) from None


@contextmanager
def redis_session(settings: Settings) -> Iterator[redis.Redis]:
    """A client that answered a PING, for the length of one command; Redis errors are exit 3.

    The PING comes before the command does anything, so that ``dlq export -o`` leaves no empty
    file behind when Redis is out of reach.
    """
    with redis_errors(settings.redis_url):
        client = connect_client(settings.redis_url)
        try:
            client.ping()
            yield client
        finally:
            client.close()


class RelayGroup(click.Group):
    """A click group whose every failure is one line on stderr and an exit status.

    ``main`` also returns (or exits with) the command's own return value, which click's
    standalone mode would drop; the console script and ``python -m conversion_relay.cli`` rely
    on it.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except ConfigurationError as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
        except RelayError as exc:
            raise CliError(str(exc), EXIT_FAILED) from exc
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(
                f"unexpected error ({type(exc).__name__}); run it again as '{PROG} --debug ...' "
                "to see the traceback, and report it.",
                EXIT_FAILED,
            ) from exc

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        try:
            result = super().main(args, prog_name or PROG, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help is the answer
            click.echo(exc.ctx.get_help())
            code = 0
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else PROG
            click.echo(f"{PROG}: {one_line(exc.format_message())} (see '{where} --help')", err=True)
            code = exc.exit_code
        except click.ClickException as exc:
            click.echo(f"{PROG}: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except click.Abort:
            click.echo(f"{PROG}: interrupted.", err=True)
            code = EXIT_INTERRUPTED
        if standalone_mode:
            sys.exit(code)
        return code
