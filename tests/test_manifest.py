"""manifest.yml is a valid Slack app manifest that sends Slack's requests where the bot listens."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from bot.blocks import HELP
from bot.slack_install import BOT_SCOPES

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
    # Slack's install flow asks for what the bot names; the manifest must grant the same.
    assert scopes == set(BOT_SCOPES)


def test_installs_return_to_the_bots_oauth_redirect(manifest):
    (redirect,) = manifest["oauth_config"]["redirect_urls"]
    assert redirect.endswith("/slack/oauth_redirect")


def test_the_usage_hint_names_every_subcommand_the_help_lists(manifest):
    # Slack shows the hint while typing /vcc; it must not drift from what /vcc help lists.
    listed = set(re.findall(r"`/vcc (\w+)", HELP))
    assert listed >= {"link", "status", "unlink", "history", "help"}
    hint = manifest["features"]["slash_commands"][0]["usage_hint"]
    assert set(re.findall(r"\b[a-z]+\b", hint)) == listed


def test_the_manifest_declares_nothing_the_bot_does_not_serve(manifest):
    # The events that tell the bot it left a workspace, and the Home tab's opening.
    events = manifest["settings"]["event_subscriptions"]
    assert events["request_url"].endswith("/slack/events")
    assert set(events["bot_events"]) == {"app_uninstalled", "tokens_revoked", "app_home_opened"}
    app_home = manifest["features"]["app_home"]
    assert app_home["home_tab_enabled"] is True
    # Its DMs (the login link) are read in the Messages tab; it answers no messages there.
    assert app_home["messages_tab_enabled"] is True
    assert app_home["messages_tab_read_only_enabled"] is True
