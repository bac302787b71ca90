"""`/vcc status` with its live check, and `/vcc unlink` with its warning and confirmation."""

from __future__ import annotations

import pytest

from bot import ids
from storage import repository as repo
from storage.models import LinkStatus, VccAccount
from tests.support import CHANNEL, MEMBER, buttons, link, text_of


def stored(bot, account: str = "acme"):
    with bot.runtime.db.transaction() as session:
        return repo.get_account(session, team_id="T0001", account_id=account)


def add_legacy(bot, account: str) -> None:
    """An account linked by the old method, as `vcc-bot import-legacy` records it."""
    with bot.runtime.db.transaction() as session:
        repo.insert_account(
            session,
            VccAccount(
                team_id="T0001",
                account_id=account,
                status=LinkStatus.LEGACY,
                environment="production",
                sf_username="legacy-api@acme.example",
            ),
        )


def status_replies(slack_client, account: str = "acme", count: int = 1, user: str | None = None):
    kw = {"user": user} if user else {}
    return slack_client.replies(slack_client.command(f"status {account}", **kw), count)


def notices(slack, words: str):
    return [m for m in slack.messages_to(CHANNEL) if words in text_of(m)]


# ---- status ---------------------------------------------------------------------------


def test_status_of_an_unknown_account_is_unlinked(slack_client):
    reply = slack_client.replies(slack_client.command("status nowhere"))[0]
    assert "*Unlinked*" in text_of(reply)
    assert "/vcc link nowhere" in text_of(reply)


def test_status_shows_legacy_with_relink_recommended(slack_client, bot):
    add_legacy(bot, "old")
    reply = slack_client.replies(slack_client.command("status old"))[0]
    body = text_of(reply)
    assert "*Legacy*" in body and "Relink recommended" in body
    assert "legacy-api@acme.example" in body


def test_status_answers_once_with_the_live_check_and_a_check_now_button(
    slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    url = slack_client.command("status acme", user=MEMBER)  # anyone may look
    (final,) = slack_client.replies(url)
    # A slash command's response_url cannot replace its earlier posts: one answer only.
    assert slack.visible(url) == [final]
    body = text_of(final)
    assert "*Linked*" in body and "vcc-api@acme.example" in body
    assert salesforce.api_user.org_id in body and "Production" in body
    assert "the link works" in body
    # Check now: a click's response_url may replace the message it was clicked on.
    salesforce.production.revoke_user_tokens(salesforce.api_user)
    button = buttons(final)[ids.CHECK_NOW]
    click = slack_client.click(ids.CHECK_NOW, button["value"], user=MEMBER)
    checking, result = slack_client.replies(click, 2)  # "Checking acme…", then the result
    assert "Checking" in text_of(checking)
    assert result["replace_original"] is True and len(slack.visible(click)) == 1
    assert "Broken" in text_of(result) and "invalid_grant" in text_of(result)


def test_a_revoked_token_shows_broken_with_advice_and_one_notice(
    slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.production.revoke_user_tokens(salesforce.api_user)
    body = text_of(status_replies(slack_client)[-1])
    assert "Broken" in body and "invalid_grant" in body and "/vcc link acme" in body
    slack.wait_for(lambda: notices(slack, "is broken"))
    assert stored(bot).health == "broken"
    # Checking again finds the same state: no second notice.
    assert "Broken" in text_of(status_replies(slack_client)[-1])
    assert len(notices(slack, "is broken")) == 1


def test_a_deactivated_user_shows_broken(slack_client, browser, bot, salesforce):
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.api_user.active = False
    body = text_of(status_replies(slack_client)[-1])
    assert "Broken" in body and "inactive" in body


@pytest.mark.parametrize("status", [503, 0])
def test_salesforce_down_is_could_not_check_not_broken(
    status, slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.production.fail_next("/services/oauth2/token", status)
    body = text_of(status_replies(slack_client)[-1])
    assert "Could not check" in body and "does not mean the link is broken" in body
    assert stored(bot).health == "healthy"
    assert notices(slack, "is broken") == []


def test_a_slow_salesforce_is_could_not_check_within_seconds(
    slack_client, browser, bot, salesforce, database_url
):
    if not database_url.startswith("sqlite"):
        pytest.skip("about timing, not storage: once is enough")
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.production.delay = 30
    body = text_of(slack_client.replies(slack_client.command("status acme"), timeout=15)[-1])
    assert "did not answer in time" in body
    salesforce.production.delay = 0


def test_a_sandbox_link_is_checked_at_the_sandbox_host(slack_client, browser, bot, salesforce):
    assert link(slack_client, browser, "uat", environment="sandbox").status_code == 200
    before = len(salesforce.production.requests)
    assert "the link works" in text_of(status_replies(slack_client, "uat")[-1])
    assert len(salesforce.production.requests) == before


# ---- unlink ---------------------------------------------------------------------------


def test_unlink_warns_and_changes_nothing_until_confirmed(slack_client, browser, bot, salesforce):
    assert link(slack_client, browser, "acme").status_code == 200
    warning = slack_client.replies(slack_client.command("unlink acme"))[0]
    body = text_of(warning)
    assert "will stop working" in body
    assert "no longer look up records or create a task" in body
    found = buttons(warning)
    unlink = found[ids.UNLINK_CONFIRM]
    assert unlink["style"] == "danger"
    assert unlink["confirm"]["confirm"]["text"] == "Unlink"
    assert found[ids.UNLINK_CANCEL]["text"]["text"] == "Cancel"
    assert stored(bot).status == "Linked"
    assert salesforce.production.revoked == []


def test_confirmed_unlink_revokes_forgets_and_notifies(
    slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    token = salesforce.production.live_refresh_tokens(salesforce.api_user)[0]
    result = slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, "acme"))[0]
    assert result["replace_original"] is True
    assert "now *Unlinked*" in text_of(result)
    assert token in salesforce.production.revoked
    account = stored(bot)
    assert account.status == "Unlinked" and account.refresh_token_encrypted is None
    notice = slack.wait_for(lambda: notices(slack, "was unlinked"))
    assert salesforce.api_user.org_id in text_of(notice[0])
    status = slack_client.replies(slack_client.command("status acme"))[0]
    assert "*Unlinked*" in text_of(status)


def test_unlink_of_a_token_salesforce_already_revoked_succeeds(
    slack_client, browser, bot, salesforce
):
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.production.revoke_user_tokens(salesforce.api_user)
    result = slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, "acme"))[0]
    assert "now *Unlinked*" in text_of(result)
    revoke = [r for r in salesforce.production.requests if r.path.endswith("/revoke")]
    assert revoke  # it was asked, answered invalid_token, and that counts as done
    assert stored(bot).status == "Unlinked"


@pytest.mark.parametrize("status", [503, 0])
def test_unlink_while_salesforce_is_down_changes_nothing(
    status, slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.production.fail_next("/services/oauth2/revoke", status)
    result = slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, "acme"))[0]
    assert result["replace_original"] is False  # the warning and its buttons stay
    assert "Nothing changed" in text_of(result) and "try again" in text_of(result)
    assert stored(bot).status == "Linked"
    assert salesforce.production.live_refresh_tokens(salesforce.api_user)
    assert notices(slack, "was unlinked") == []


def test_cancel_leaves_the_link_alone(slack_client, browser, bot, salesforce):
    assert link(slack_client, browser, "acme").status_code == 200
    result = slack_client.replies(slack_client.click(ids.UNLINK_CANCEL, "acme"))[0]
    assert result["replace_original"] is True
    assert "Nothing changed" in text_of(result)
    assert stored(bot).status == "Linked"
    assert salesforce.production.revoked == []


def test_unlinking_an_unlinked_account_says_so(slack_client):
    reply = slack_client.replies(slack_client.command("unlink acme"))[0]
    assert "is not linked" in text_of(reply)
    assert buttons(reply) == {}


def test_a_legacy_account_unlinks_without_a_token_to_revoke(slack_client, bot, salesforce):
    add_legacy(bot, "old")
    warning = text_of(slack_client.replies(slack_client.command("unlink old"))[0])
    assert "will stop working" in warning and "revoked at Salesforce" not in warning
    result = slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, "old"))[0]
    assert "now *Unlinked*" in text_of(result)
    assert stored(bot, "old").status == "Unlinked"
    assert [r for r in salesforce.production.requests if r.path.endswith("/revoke")] == []
