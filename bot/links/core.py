"""The core's parts composed from their collaborators: the one way to assemble them.

The composition root (bot.cli) builds the collaborators from Settings and calls
`compose`; tests call it with a recording notifier and a clock of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.crypto import TokenCipher
from bot.domain import Environment, Notifier
from bot.links.common import Background, Hosts
from bot.links.errors import Store
from bot.links.health import REUSE_FOR, LinkHealth
from bot.links.login import LoginFlow
from bot.links.pending import PendingTokens
from bot.links.service import LinkService
from bot.salesforce import SalesforceClient
from storage.db import Database


@dataclass
class Core:
    store: Store
    pending: PendingTokens
    health: LinkHealth
    login: LoginFlow
    links: LinkService
    background: Background

    async def aclose(self, within: float = 10.0) -> None:
        """Finish what is under way (bounded), so no refresh is cut midway."""
        await self.background.aclose(within=within)
        await self.health.idle()


def compose(
    *,
    db: Database,
    cipher: TokenCipher,
    salesforce: SalesforceClient,
    notifier: Notifier,
    login_hosts: dict[Environment, str],
    public_url: str,
    check_interval: timedelta,
    clock: Callable[[], datetime],
    reuse_for: timedelta = REUSE_FOR,
) -> Core:
    store = Store(db)
    hosts = Hosts(login_hosts)
    background = Background()
    pending = PendingTokens(store=store, cipher=cipher, salesforce=salesforce, clock=clock)
    health = LinkHealth(
        store=store,
        cipher=cipher,
        salesforce=salesforce,
        hosts=hosts,
        pending=pending,
        notifier=notifier,
        clock=clock,
        interval=check_interval,
        reuse_for=reuse_for,
    )
    login = LoginFlow(
        store=store,
        cipher=cipher,
        salesforce=salesforce,
        hosts=hosts,
        pending=pending,
        health=health,
        notifier=notifier,
        background=background,
        public_url=public_url,
        clock=clock,
    )
    links = LinkService(
        store=store,
        cipher=cipher,
        salesforce=salesforce,
        hosts=hosts,
        notifier=notifier,
        clock=clock,
    )
    # Logins that end with nobody there (expired, withdrawn, a callback cut short) are
    # told by the sweep the monitor runs each tick for what logins leave behind.
    pending.sweep_also(login.close_ended)
    return Core(store, pending, health, login, links, background)
