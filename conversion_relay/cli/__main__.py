"""``python -m conversion_relay.cli``: the same as the ``conversion-relay`` console script."""

from conversion_relay.cli import main

raise SystemExit(main())
