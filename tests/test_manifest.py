"""manifest.yml is a valid Slack app manifest that sends Slack's requests where the bot listens."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "slack-manifest-schema" / "manifest.schema.1.0.0.json"


@pytest.fixture(scope="module")
def manifest():
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_the_manifest_passes_slacks_schema(manifest):
    if not SCHEMA.is_file():
        pytest.skip(f"Slack's manifest schema is not at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator(schema).iter_errors(manifest)
    ]
    assert errors == []


def test_the_vcc_command_has_a_usage_hint_and_reaches_slack_events(manifest):
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    vcc = commands["/vcc"]
    assert vcc["usage_hint"]
    assert vcc["url"].endswith("/slack/events")


def test_buttons_reach_slack_events_over_http(manifest):
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"].endswith("/slack/events")
    assert settings["socket_mode_enabled"] is False


def test_the_bot_asks_for_the_scopes_it_uses(manifest):
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "im:write", "users:read"} <= scopes
