"""Many links changing at once: one message per channel, paced within Slack's rate limit."""

from __future__ import annotations

import asyncio
import threading
import time

from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import AccountView, Health, LinkStatus
from bot.notify import SlackNotifier
from bot.slack_install import OneWorkspace
from tests.fakes import FakeSlack
from tests.support import CHANNEL, bot_with, link, text_of

OTHER_CHANNEL = "C0OTHER"


def broken_messages(slack: FakeSlack, channel: str) -> list[str]:
    return [text_of(m) for m in slack.messages_to(channel) if "broken" in text_of(m)]


def refreshes(fake) -> int:
    return sum(
        r.path == "/services/oauth2/token" and r.form.get("grant_type") == "refresh_token"
        for r in fake.requests
    )


def test_a_mass_revocation_is_one_message_per_channel(settings, slack, salesforce, browser):
    with bot_with(settings, slack, vcc_health_interval=1) as (_, client):
        for n in range(1, 6):  # one API user's five approvals, noticed in one channel
            assert link(client, browser, f"acme{n}").status_code == 200
        for n in range(1, 4):  # another org's API user, in another channel
            response = link(
                client, browser, f"uat{n}", environment="sandbox", channel=OTHER_CHANNEL
            )
            assert response.status_code == 200
        # A monitor pass over all eight first: the checks each link starts are done.
        seen = (refreshes(salesforce.production), refreshes(salesforce.sandbox))
        slack.wait_for(
            lambda: (
                refreshes(salesforce.production) >= seen[0] + 5
                and refreshes(salesforce.sandbox) >= seen[1] + 3
            ),
            timeout=15,
        )
        salesforce.production.revoke_user_tokens(salesforce.api_user)
        salesforce.sandbox.revoke_user_tokens(salesforce.sandbox_user)

        slack.wait_for(lambda: broken_messages(slack, CHANNEL), timeout=15)
        slack.wait_for(lambda: broken_messages(slack, OTHER_CHANNEL), timeout=15)
        # Later passes find the same: nothing more is said.
        checks = len(salesforce.production.requests)
        slack.wait_for(lambda: len(salesforce.production.requests) > checks + 10, timeout=15)

    assert len(broken_messages(slack, CHANNEL)) == 1, broken_messages(slack, CHANNEL)
    assert len(broken_messages(slack, OTHER_CHANNEL)) == 1, broken_messages(slack, OTHER_CHANNEL)
    (here,) = broken_messages(slack, CHANNEL)
    (there,) = broken_messages(slack, OTHER_CHANNEL)
    assert "5 VCC accounts are broken" in here
    assert all(f"acme{n}" in here for n in range(1, 6)) and "uat1" not in here
    assert "3 VCC accounts are broken" in there
    assert all(f"uat{n}" in there for n in range(1, 4)) and "acme1" not in there


def view(account: str, channel: str = CHANNEL) -> AccountView:
    return AccountView(
        team_id="T0001",
        account_id=account,
        status=LinkStatus.LINKED,
        notify_channel=channel,
        sf_username="vcc-api@acme.example",
        health=Health.BROKEN,
        health_reason="invalid_grant: expired access/refresh token",
        linked_by="UADMIN1",
    )


def test_changes_are_paced_at_one_message_per_second_per_channel(slack):
    """A burst keeps arriving while the first message goes out: the next waits its turn,
    and carries everything that arrived meanwhile; another channel does not wait."""
    posted: list[tuple[float, str]] = []
    lock = threading.Lock()

    def record(req) -> None:
        if req.path.endswith("chat.postMessage"):
            with lock:
                posted.append((time.monotonic(), str(req.form.get("channel") or req.json())))

    slack.on_request = record

    async def burst() -> None:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        notifier = SlackNotifier(OneWorkspace(client), pace=1.0, gather=0.2)
        for n in range(30):
            await notifier.broken(view(f"a{n}"))
        await notifier.broken(view("b0", OTHER_CHANNEL))
        await asyncio.sleep(0.4)  # the first message is out; the burst goes on
        for n in range(30, 60):
            await notifier.broken(view(f"a{n}"))
        await notifier.aclose(within=10)

    asyncio.run(burst())
    here = [t for t, where in posted if CHANNEL in where]
    there = [t for t, where in posted if OTHER_CHANNEL in where]
    assert len(here) == 2 and len(there) == 1
    # Beside the channels, the admin who linked them hears once per batch, in a DM.
    dms = [text_of(m) for m in slack.dms_to("UADMIN1")]
    assert len(dms) == 3
    assert sum("30 VCC accounts you linked are broken" in dm for dm in dms) == 2
    assert here[1] - here[0] >= 0.95  # paced, not a burst
    assert there[0] - here[0] < 0.5  # another channel has its own pace
    first, second = (text_of(m) for m in slack.messages_to(CHANNEL))
    assert "30 VCC accounts are broken" in first and "30 VCC accounts are broken" in second
    assert all(f"*a{n}*" in first for n in range(30)) and "*a30*" not in first
    assert all(f"*a{n}*" in second for n in range(30, 60))
