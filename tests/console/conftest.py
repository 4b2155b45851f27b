"""The console fixture: ``console_support.console_starter`` on a fresh database."""

from __future__ import annotations

import pytest

from console_support import ConsoleEnv, console_starter


@pytest.fixture
def console_env(fresh_database_url: str, nats_url: str) -> ConsoleEnv:
    return console_starter(fresh_database_url, nats_url)
