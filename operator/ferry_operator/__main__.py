"""``ferry-operator``: run the kopf operator for all namespaces."""

from __future__ import annotations

import asyncio
import logging
import sys

import kopf

from . import handlers  # noqa: F401 - imported for its kopf registrations


def main() -> int:
    kopf.configure(log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    asyncio.run(kopf.operator(clusterwide=True, standalone=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
