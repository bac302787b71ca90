"""The five-accounts rule holds when linkers race, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import httpx
from sqlalchemy import func
from sqlmodel import Session, col, select

from bot.crypto import TokenCipher
from storage import repository as repo
from storage.db import Database, create_db_engine, upgrade
from storage.models import AuditEvent, LinkStatus, PendingToken, VccAccount
from tests.support import TEAM, link, open_login, start_link, text_of

ORG, USER = "00D000000000001AAA", "005000000000001AAA"
RACERS = 8


def details(n: int) -> repo.LinkRecord:
    return repo.LinkRecord(
        environment="production",
        login_host="https://login.example",
        instance_url="https://acme.example",
        identity_url=f"https://login.example/id/{ORG}/{USER}",
        org_id=ORG,
        sf_user_id=USER,
        sf_username="api@acme.example",
        refresh_token_encrypted=f"encrypted-{n}",
        permission_warnings="[]",
        linked_by="UADMIN1",
        notify_channel="C1",
    )


def linked_slots(database_url: str) -> list[int | None]:
    engine = create_db_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(VccAccount).where(
                    VccAccount.org_id == ORG,
                    VccAccount.sf_user_id == USER,
                    VccAccount.status == LinkStatus.LINKED,
                )
            ).all()
            return sorted(r.api_user_slot for r in rows)  # type: ignore[type-var]
    finally:
        engine.dispose()


def test_racing_saves_never_exceed_five_links(database_url):
    """Eight transactions, each on its own connection, released together by a barrier."""
    engine = create_db_engine(database_url)
    upgrade(engine)
    now = datetime.now(UTC)
    for n in (1, 2):
        Database(engine).call(
            lambda s, n=n: repo.save_link(
                s, team_id=TEAM, account_id=f"existing-{n}", link=details(n), now=now
            )
        )
    engine.dispose()

    barrier = threading.Barrier(RACERS)
    outcomes: dict[int, str] = {}

    def race(n: int) -> None:
        own = create_db_engine(database_url)
        try:
            with own.connect():
                pass  # connect before the barrier: race on the SQL, not on connecting
            barrier.wait(timeout=30)
            with Session(own) as session:
                try:
                    with session.begin():
                        repo.save_link(
                            session,
                            team_id=TEAM,
                            account_id=f"racer-{n}",
                            link=details(100 + n),
                            now=now,
                        )
                    outcomes[n] = "linked"
                except repo.ApiUserFull as full:
                    outcomes[n] = f"full:{len(full.linked)}"
        finally:
            own.dispose()

    threads = [threading.Thread(target=race, args=(n,)) for n in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes.values()) == ["full:5"] * 5 + ["linked"] * 3
    assert linked_slots(database_url) == [1, 2, 3, 4, 5]


def test_racing_callbacks_link_exactly_three_and_refuse_the_rest(
    slack_client, salesforce, slack, bot, settings
):
    """Eight admins' browsers come back from Salesforce at the same moment."""
    # Salesforce's own five-approvals limit would revoke racers' tokens mid-flight and
    # blur what this test is about, the bot's rule; test_five_approvals covers that limit.
    salesforce.production.max_approvals = 100
    for n in (1, 2):
        with httpx.Client(timeout=10) as browser:
            assert link(slack_client, browser, f"existing-{n}").status_code == 200
    callbacks = []
    browsers = [httpx.Client(timeout=30) for _ in range(RACERS)]
    try:
        for n, browser in enumerate(browsers):
            start = start_link(slack_client, f"racer-{n}")
            first = open_login(browser, start.login_url)
            callbacks.append(browser.get(first.headers["location"]).headers["location"])
        barrier = threading.Barrier(RACERS)
        pages: dict[int, httpx.Response] = {}

        def come_back(n: int) -> None:
            barrier.wait(timeout=30)
            pages[n] = browsers[n].get(callbacks[n])

        threads = [threading.Thread(target=come_back, args=(n,)) for n in range(RACERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
    finally:
        for browser in browsers:
            browser.close()

    won = [n for n, page in pages.items() if page.status_code == 200]
    lost = [n for n, page in pages.items() if page.status_code != 200]
    assert len(won) == 3 and len(lost) == 5, {n: p.status_code for n, p in pages.items()}
    for n in lost:
        assert "at most five" in pages[n].text
    assert linked_slots(settings.database_url) == [1, 2, 3, 4, 5]

    # Every loser's token was revoked: the issued tokens that no stored link holds.
    cipher = TokenCipher(settings.encryption_keys)
    with bot.runtime.db.transaction() as session:
        stored = {
            cipher.decrypt(a.refresh_token_encrypted)
            for a in session.exec(select(VccAccount)).all()
            if a.refresh_token_encrypted
        }
        pending = session.exec(select(func.count()).select_from(PendingToken)).one()
        refused = session.exec(
            select(func.count())
            .select_from(AuditEvent)
            .where(col(AuditEvent.event) == "link_refused")
        ).one()
    losers = [t for t in salesforce.production.issued if t not in stored]
    assert len(losers) == 5
    assert set(losers) <= set(salesforce.production.revoked)
    assert pending == 0 and refused == 5
    dms = [m for m in slack.dms_to("UADMIN1") if "five times" in text_of(m)]
    assert len(dms) == 5
