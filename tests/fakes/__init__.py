"""In-process HTTP fakes of Salesforce and Slack for tests."""

from ._server import FakeServer, Recorded, Reply
from .salesforce import PERMISSION_FIELDS, FakeSalesforce, SfUser, pkce_challenge, token_signature
from .slack import ApiCall, FakeSlack

__all__ = [
    "PERMISSION_FIELDS",
    "ApiCall",
    "FakeSalesforce",
    "FakeServer",
    "FakeSlack",
    "Recorded",
    "Reply",
    "SfUser",
    "pkce_challenge",
    "token_signature",
]
