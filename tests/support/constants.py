"""The credentials and Slack ids the fakes and the bot are set up with."""

from __future__ import annotations

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
CLIENT_ID = "3MVG9-test-client-id"
CLIENT_SECRET = "test-client-secret-0123456789"
BOT_TOKEN = "xoxb-test-token"
TEAM = "T0001"
ADMIN = "UADMIN1"
MEMBER = "UMEMBER1"
CHANNEL = "C0NOTICE"

PG_HINT = (
    "set TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test to run "
    "these tests on PostgreSQL too (.ci/run does)"
)
