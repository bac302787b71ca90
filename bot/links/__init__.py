"""The core, split along its lifecycles; no Slack, HTTP-framework or web code here.

    LoginFlow     start, open, complete: a login link until its link is committed
    LinkHealth    one live check per account at a time; transitions and their notices
    PendingTokens token custody: every token committed with its link, or revoked
    LinkService   reading accounts and history, unlinking

Dependencies run one way: LoginFlow -> LinkHealth -> PendingTokens; LinkService stands
beside them. People are told what happened through the Notifier; failures are domain
exceptions (bot.domain) that the edges turn into words (bot.messages).
"""

from bot.links.common import MONITOR, Background, Hosts
from bot.links.core import Core, compose
from bot.links.errors import Store
from bot.links.health import LinkHealth
from bot.links.login import BrowserLogin, Callback, LoginFlow, LoginPreview
from bot.links.pending import PendingTokens
from bot.links.service import LinkService

__all__ = [
    "MONITOR",
    "Background",
    "BrowserLogin",
    "Callback",
    "Core",
    "Hosts",
    "LinkHealth",
    "LinkService",
    "LoginFlow",
    "LoginPreview",
    "PendingTokens",
    "Store",
    "compose",
]
