"""What the tests share besides fixtures: constants, the running bot, Slack's side, the link flow.

Tests import from here (`from tests.support import SlackClient, TEAM, text_of`); the fixtures
that build these objects are in tests/conftest.py.
"""

from tests.support.constants import (
    ADMIN,
    BOT_TOKEN,
    CHANNEL,
    CLIENT_ID,
    CLIENT_SECRET,
    MEMBER,
    PG_HINT,
    SIGNING_SECRET,
    TEAM,
)
from tests.support.database import DatabaseHold
from tests.support.flow import (
    LoginStart,
    link,
    open_login,
    query_of,
    start_link,
    through_salesforce,
)
from tests.support.messages import buttons, raw_text_of, text_of
from tests.support.running import RunningBot
from tests.support.salesforce import Salesforce
from tests.support.slack_client import SlackClient, bot_with, command_fields
from tests.support.waiting import free_port, wait_until

__all__ = [
    "ADMIN",
    "BOT_TOKEN",
    "CHANNEL",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "MEMBER",
    "PG_HINT",
    "SIGNING_SECRET",
    "TEAM",
    "DatabaseHold",
    "LoginStart",
    "RunningBot",
    "Salesforce",
    "SlackClient",
    "bot_with",
    "buttons",
    "command_fields",
    "free_port",
    "link",
    "open_login",
    "query_of",
    "raw_text_of",
    "start_link",
    "text_of",
    "through_salesforce",
    "wait_until",
]
