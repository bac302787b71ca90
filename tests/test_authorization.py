"""Only workspace admins, owners and VCC_ADMIN_USERS may link or unlink; every click is checked."""

from __future__ import annotations

import pytest

from bot import ids
from storage import repository as repo
from tests.support import MEMBER, TEAM, RunningBot, SlackClient, buttons, link, text_of


def stored(bot, account: str = "acme"):
    with bot.runtime.db.transaction() as session:
        return repo.get_account(session, team_id=TEAM, account_id=account)


@pytest.mark.parametrize("subcommand", ["link", "unlink"])
def test_a_member_is_refused_link_and_unlink(subcommand, slack_client):
    reply = slack_client.replies(slack_client.command(f"{subcommand} acme", user=MEMBER))[0]
    assert "Only workspace admins and owners" in text_of(reply)
    assert buttons(reply) == {}


def test_a_member_clicking_a_forwarded_link_button_gets_no_login(slack_client, slack, bot):
    reply = slack_client.replies(slack_client.click(ids.LINK_PRODUCTION, "acme", user=MEMBER))[0]
    assert "Only workspace admins" in text_of(reply)
    assert slack.dms_to(MEMBER) == []
    with bot.runtime.db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM login_attempt").scalar() == 0


def test_a_member_cannot_confirm_an_unlink(slack_client, browser, bot, salesforce):
    assert link(slack_client, browser, "acme").status_code == 200
    reply = slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, "acme", user=MEMBER))[0]
    assert "Only workspace admins" in text_of(reply)
    assert stored(bot).status == "Linked"
    assert salesforce.production.revoked == []


def test_an_owner_may_link(slack_client, slack):
    slack.add_user("UOWNER1", is_owner=True)
    reply = slack_client.replies(slack_client.command("link acme", user="UOWNER1"))[0]
    assert ids.LINK_PRODUCTION in buttons(reply)


def test_vcc_admin_users_may_link_without_being_workspace_admins(settings, slack, browser):
    allowed = settings.model_copy(update={"vcc_admin_users": frozenset({MEMBER})})
    running = RunningBot(allowed).start()
    try:
        client = SlackClient(running, slack)
        reply = client.replies(client.command("link acme", user=MEMBER))[0]
        assert ids.LINK_PRODUCTION in buttons(reply)
        # The allowlist is enough: Slack is not even asked.
        assert slack.calls_to("users.info") == []
    finally:
        running.stop()


def test_admin_answers_are_cached_briefly(slack_client, slack):
    for _ in range(3):
        slack_client.replies(slack_client.command("link acme"))
    assert len(slack.calls_to("users.info")) == 1


def test_when_slack_cannot_say_who_is_admin_nothing_happens(slack_client, slack):
    slack.fail_next("users.info", "user_not_found")
    reply = slack_client.replies(slack_client.command("link acme"))[0]
    assert "could not confirm" in text_of(reply)
    assert "user_not_found" in text_of(reply)
    assert buttons(reply) == {}


def test_help_and_unknown_words_show_usage(slack_client):
    for words in ("help", "", "frobnicate", "link a b c"):
        reply = slack_client.replies(slack_client.command(words))[0]
        body = text_of(reply)
        for sub in ("/vcc link", "/vcc status", "/vcc unlink", "/vcc help"):
            assert sub in body, (words, sub)


def test_an_invalid_account_id_is_explained(slack_client):
    reply = slack_client.replies(slack_client.command("link bad/account"))[0]
    assert "not a VCC account id" in text_of(reply)
    assert buttons(reply) == {}
