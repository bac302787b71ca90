"""The bot as `vcc-bot serve` runs it: composed by `bot.cli.build`, served by uvicorn."""

from __future__ import annotations

import os
import threading
from typing import Any

import uvicorn

from bot.cli import Runtime, build
from bot.config import Settings
from tests.support.waiting import wait_until


class RunningBot:
    """uvicorn serving the composed bot in a thread, on a real socket; restartable."""

    def __init__(self, settings: Settings, salesforce_transport: Any = None) -> None:
        self.settings = settings
        self.salesforce_transport = salesforce_transport
        self.url = settings.public_url
        self.runtime: Runtime | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RunningBot:
        self.runtime = build(self.settings, salesforce_transport=self.salesforce_transport)
        config = uvicorn.Config(
            self.runtime.web,
            host=self.settings.host,
            port=self.settings.port,
            access_log=False,
            log_config=None,
            lifespan="on",  # runs the health monitor, as `vcc-bot serve` does
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server is not None and self._server.started, 10, "uvicorn")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self.runtime is not None:
            self.runtime.db.dispose()
        self._server = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()


def operator_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The settings as the environment an operator would give `vcc-bot` (a subprocess)."""
    assert settings.slack_bot_token is not None
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        "SLACK_BOT_TOKEN": settings.slack_bot_token.get_secret_value(),
        "SLACK_SIGNING_SECRET": settings.slack_signing_secret.get_secret_value(),
        "SLACK_API_URL": settings.slack_api_url,
        "SALESFORCE_CLIENT_ID": settings.salesforce_client_id,
        "SALESFORCE_CLIENT_SECRET": settings.salesforce_client_secret.get_secret_value(),
        "SALESFORCE_PRODUCTION_URL": settings.salesforce_production_url,
        "SALESFORCE_SANDBOX_URL": settings.salesforce_sandbox_url,
        "PUBLIC_URL": settings.public_url,
        "DATABASE_URL": settings.database_url,
        "VCC_ENCRYPTION_KEY": settings.vcc_encryption_key.get_secret_value(),
        "VCC_CHECK_REUSE": str(settings.vcc_check_reuse),
        **extra,
    }
