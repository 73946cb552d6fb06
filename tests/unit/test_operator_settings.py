"""The operator's settings from its environment (what the chart's values become)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ferry_operator.__main__ import log_level
from ferry_operator.settings import Settings


def test_the_log_level_is_one_of_four_names_and_nothing_else() -> None:
    assert log_level("info") == logging.INFO
    assert log_level(" Debug ") == logging.DEBUG
    assert log_level("error") == logging.ERROR
    with pytest.raises(SystemExit, match="use one of debug, info, warning, error"):
        log_level("verbose")


def test_the_webhook_and_the_operators_own_pod_come_from_the_deployment() -> None:
    settings = Settings.from_env(
        {
            "FERRY_WEBHOOK_PORT": "9443",
            "FERRY_WEBHOOK_CERT_DIR": "/etc/tls",
            "POD_NAMESPACE": "ferry-system",
            "POD_NAME": "ferry-operator-abc",
        }
    )
    assert (settings.webhook_port, settings.webhook_cert_dir) == (9443, Path("/etc/tls"))
    assert settings.own_pod == ("ferry-system", "ferry-operator-abc")
    bare = Settings.from_env({})
    assert (bare.webhook_port, bare.own_pod) == (0, None), "off unless the chart turns it on"
