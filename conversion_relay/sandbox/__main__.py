"""`python -m conversion_relay.sandbox`: serve every known vendor sandbox for the demo or a benchmark."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from conversion_relay.sandbox import SandboxServer, mounted_sandboxes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conversion_relay.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with SandboxServer(mounted_sandboxes(), host=args.host, port=args.port) as server:
        print(f"sandbox listening on {server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
