"""Stand-ins of Slack and Salesforce on loopback: the tests' fakes and `vcc-bot demo`'s.

Each is a claim about the real service: the "Contract" section of slack.py and of
salesforce.py lists every behaviour it claims and where the real service documents it,
and tests/test_fakes.py, test_fake_slack_oauth.py, test_slack_fidelity.py and
test_salesforce_fidelity.py hold them to it. They ship with the package so that
`vcc-bot demo` runs the real bot against the very stand-ins the tests use.
"""

from ._server import FakeServer, Gate, Held, Recorded, Reply
from .salesforce import PERMISSION_FIELDS, FakeSalesforce, SfUser, pkce_challenge, token_signature
from .slack import ApiCall, FakeSlack, Workspace

__all__ = [
    "PERMISSION_FIELDS",
    "ApiCall",
    "FakeSalesforce",
    "FakeServer",
    "FakeSlack",
    "Gate",
    "Held",
    "Recorded",
    "Reply",
    "SfUser",
    "Workspace",
    "pkce_challenge",
    "token_signature",
]
