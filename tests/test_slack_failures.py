"""When Slack says no: the admin hears about it, and a link is never lost over a notice."""

from __future__ import annotations

from bot import ids
from storage import repository as repo
from tests.support import ADMIN, CHANNEL, TEAM, link, text_of


def test_a_login_dm_that_cannot_be_sent_is_reported(slack_client, slack):
    slack.fail_next("conversations.open", "cannot_dm_bot")
    url = slack_client.click(ids.LINK_PRODUCTION, "acme")
    replies = slack_client.replies(url, 2)
    assert "Check your DMs" in text_of(replies[0])
    assert "cannot_dm_bot" in text_of(replies[1])
    assert "could not send you the login link" in text_of(replies[1])


def test_a_notice_the_bot_cannot_post_still_links_and_tells_the_admin(
    slack_client, browser, slack, bot
):
    slack.not_in_channel.add(CHANNEL)
    assert link(slack_client, browser, "acme").status_code == 200
    with bot.runtime.db.transaction() as session:
        assert repo.get_account(session, team_id=TEAM, account_id="acme").status == "Linked"
    dm = slack.wait_for(lambda: [m for m in slack.dms_to(ADMIN) if "could not post" in text_of(m)])
    assert "not_in_channel" in text_of(dm[0]) and f"<#{CHANNEL}>" in text_of(dm[0])


def test_rate_limited_notices_are_retried(slack_client, browser, slack):
    slack.rate_limit_next("chat.postMessage", retry_after=1)
    assert link(slack_client, browser, "acme").status_code == 200
    slack.wait_for(lambda: slack.messages_to(CHANNEL), timeout=10)
    assert [m for m in slack.dms_to(ADMIN) if "Linked." in text_of(m)]
