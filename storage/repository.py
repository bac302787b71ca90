"""The only place that writes SQL: keyword-only functions over a Session.

One failure convention: a function raises when it refuses (ApiUserFull, AttemptRefused,
AlreadyLinked, LinkReplaced), and returns a bool only where it can lose a race that the
caller simply accepts (claim_check, replace_token).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from bot.domain import (
    MAX_ACCOUNTS_PER_API_USER,
    AttemptProblem,
    AuditKind,
    Health,
    LinkStatus,
)
from storage.models import (
    ApiUser,
    AuditEvent,
    HomeViewer,
    LinkFields,
    LoginAttempt,
    OnceKey,
    PendingToken,
    RateWindow,
    VccAccount,
)

# Login attempts are kept a while after they expire so a late click gets "expired",
# not "unknown"; after that they are only clutter.
ATTEMPT_RETENTION = timedelta(days=1)


class ApiUserFull(Exception):
    """The Salesforce API user already has the maximum number of VCC accounts."""

    def __init__(self, linked: list[tuple[str, str]]) -> None:
        super().__init__(f"API user already linked to {len(linked)} VCC accounts")
        self.linked = linked  # (team id, account id): plain data, valid after the rollback


class AttemptRefused(Exception):
    """A login link or state cannot be used, and why."""

    def __init__(self, problem: AttemptProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


class LinkReplaced(Exception):
    """The link is not the one the caller read: relinked or unlinked meanwhile."""


class AlreadyLinked(Exception):
    """A Legacy import would overwrite a Linked account."""


class LinkRecord(LinkFields):
    """A completed link as save_link stores it: its fields plus the encrypted token."""

    refresh_token_encrypted: str


@dataclass(frozen=True)
class HealthRecorded:
    account: VccAccount
    before: Health


@dataclass(frozen=True)
class SavedLink:
    """What save_link replaced: the old token (now owned by no link) and the health before."""

    account: VccAccount
    replaced_token: str | None
    replaced_host: str | None
    health_before: Health

    @property
    def relinked(self) -> bool:
        return self.replaced_token is not None


def get_account(
    session: Session, *, team_id: str, account_id: str, for_update: bool = False
) -> VccAccount | None:
    query = select(VccAccount).where(
        VccAccount.team_id == team_id, VccAccount.account_id == account_id
    )
    if for_update:
        query = query.with_for_update()  # a row lock on PostgreSQL; SQLite's is the transaction
    return session.exec(query).first()


def _current(session: Session, *, team_id: str, account_id: str, token: str | None) -> VccAccount:
    """The account, locked, if it still holds the token the caller read; else LinkReplaced."""
    account = get_account(session, team_id=team_id, account_id=account_id, for_update=True)
    if account is None or account.refresh_token_encrypted != token:
        raise LinkReplaced()
    return account


def count_api_user_links(session: Session, *, org_id: str, sf_user_id: str) -> int:
    return len(accounts_for_api_user(session, org_id=org_id, sf_user_id=sf_user_id))


# ---- login links ---------------------------------------------------------------------


def create_login_attempt(
    session: Session,
    *,
    link_hash: str,
    team_id: str,
    slack_user_id: str,
    account_id: str,
    environment: str,
    channel_id: str,
    now: datetime,
    expires_at: datetime,
    login_host: str | None = None,
    enterprise_id: str | None = None,
) -> LoginAttempt:
    session.exec(delete(LoginAttempt).where(col(LoginAttempt.expires_at) < now - ATTEMPT_RETENTION))
    attempt = LoginAttempt(
        link_hash=link_hash,
        team_id=team_id,
        enterprise_id=enterprise_id,
        slack_user_id=slack_user_id,
        account_id=account_id,
        environment=environment,
        login_host=login_host,
        channel_id=channel_id,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(attempt)
    session.flush()
    return attempt


def _diagnose(attempt: LoginAttempt | None, *, now: datetime) -> AttemptProblem:
    if attempt is None:
        return AttemptProblem.UNKNOWN
    if attempt.withdrawn_at is not None:
        return AttemptProblem.WITHDRAWN
    if attempt.consumed_at is not None:
        return AttemptProblem.USED
    if attempt.expires_at <= now:
        return AttemptProblem.EXPIRED
    return AttemptProblem.OTHER_BROWSER


def _usable(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        col(LoginAttempt.consumed_at).is_(None),
        col(LoginAttempt.withdrawn_at).is_(None),
        col(LoginAttempt.expires_at) > now,
    )


def _this_browser(presented_hash: str | None) -> ColumnElement[bool]:
    """Not bound yet, or bound to the browser presenting this secret."""
    unbound = col(LoginAttempt.browser_hash).is_(None)
    if presented_hash is None:
        return unbound
    return or_(unbound, col(LoginAttempt.browser_hash) == presented_hash)


def peek_login_attempt(
    session: Session, *, link_hash: str, presented_hash: str | None, now: datetime
) -> LoginAttempt:
    """The login link as this browser may still use it; changes nothing (GET, HEAD)."""
    attempt = session.exec(
        select(LoginAttempt).where(
            col(LoginAttempt.link_hash) == link_hash, *_usable(now), _this_browser(presented_hash)
        )
    ).first()
    if attempt is not None:
        return attempt
    found = session.exec(select(LoginAttempt).where(LoginAttempt.link_hash == link_hash)).first()
    raise AttemptRefused(_diagnose(found, now=now))


def bind_login_attempt(
    session: Session,
    *,
    link_hash: str,
    presented_hash: str | None,
    browser_hash: str,
    state_hash: str,
    code_verifier_encrypted: str,
    now: datetime,
) -> LoginAttempt:
    """Bind a login link to the first browser that opens it, with a fresh state.

    The same browser (presenting the secret it was given) may open it again, e.g. after
    closing the tab; a second browser may not. Each binding stores a freshly minted
    browser secret, never one the client chose. One conditional UPDATE decides, so two
    browsers racing cannot both win. Raises AttemptRefused with the reason otherwise.
    """
    result = session.exec(
        update(LoginAttempt)
        .where(
            col(LoginAttempt.link_hash) == link_hash, *_usable(now), _this_browser(presented_hash)
        )
        .values(
            browser_hash=browser_hash,
            state_hash=state_hash,
            code_verifier_encrypted=code_verifier_encrypted,
        )
    )
    attempt = session.exec(select(LoginAttempt).where(LoginAttempt.link_hash == link_hash)).first()
    if result.rowcount == 1 and attempt is not None:
        return attempt
    raise AttemptRefused(_diagnose(attempt, now=now))


def consume_login_attempt(
    session: Session, *, state_hash: str, browser_hash: str | None, now: datetime
) -> LoginAttempt:
    """Use a state once: one UPDATE whose row count says whether this call won."""
    result = session.exec(
        update(LoginAttempt)
        .where(
            col(LoginAttempt.state_hash) == state_hash,
            *_usable(now),
            col(LoginAttempt.browser_hash) == (browser_hash or ""),
        )
        .values(consumed_at=now)
    )
    attempt = session.exec(
        select(LoginAttempt).where(LoginAttempt.state_hash == state_hash)
    ).first()
    if result.rowcount == 1 and attempt is not None:
        return attempt
    raise AttemptRefused(_diagnose(attempt, now=now))


def require_not_withdrawn(session: Session, *, attempt_id: int) -> None:
    """A login in flight when its account was unlinked must not link it again."""
    attempt = session.get(LoginAttempt, attempt_id, with_for_update=True)
    if attempt is None or attempt.withdrawn_at is not None:
        raise AttemptRefused(AttemptProblem.WITHDRAWN)


def withdraw_login_attempts(
    session: Session, *, team_id: str, account_id: str, now: datetime
) -> int:
    """Make every outstanding login link of an account unusable, those in flight too."""
    result = session.exec(
        update(LoginAttempt)
        .where(
            col(LoginAttempt.team_id) == team_id,
            col(LoginAttempt.account_id) == account_id,
            col(LoginAttempt.withdrawn_at).is_(None),
            col(LoginAttempt.expires_at) > now,
        )
        .values(withdrawn_at=now)
    )
    return int(result.rowcount)


def withdraw_workspace_attempts(
    session: Session, *, team_id: str | None, enterprise_id: str | None, now: datetime
) -> int:
    """The app left a workspace (or, with no team, an org-wide install left its org): its
    outstanding login links stop working. A second call finds none left."""
    if team_id is not None:
        scope = col(LoginAttempt.team_id) == team_id
    else:
        scope = col(LoginAttempt.enterprise_id) == enterprise_id
    result = session.exec(
        update(LoginAttempt)
        .where(
            scope,
            col(LoginAttempt.consumed_at).is_(None),
            col(LoginAttempt.withdrawn_at).is_(None),
            col(LoginAttempt.expires_at) > now,
        )
        .values(withdrawn_at=now)
    )
    return int(result.rowcount)


# ---- login messages: where a login was offered, told once how it ended --------------------


def record_login_messages(
    session: Session,
    *,
    link_hash: str,
    dm_channel: str,
    dm_ts: str,
    reply_url_encrypted: str | None,
) -> None:
    """Where a login link was offered: its DM, and the click's response_url (encrypted)."""
    session.exec(
        update(LoginAttempt)
        .where(col(LoginAttempt.link_hash) == link_hash)
        .values(dm_channel=dm_channel, dm_ts=dm_ts, reply_url_encrypted=reply_url_encrypted)
    )


def get_login_attempt(session: Session, *, attempt_id: int) -> LoginAttempt | None:
    return session.get(LoginAttempt, attempt_id)


def claim_login_close(session: Session, *, attempt_id: int, now: datetime) -> LoginAttempt | None:
    """Take the telling of a login's end: one conditional UPDATE whose row count says
    whether this caller won, so a callback and the sweeps of several replicas tell it
    once. The row (where to tell it) for the winner; None for the others."""
    result = session.exec(
        update(LoginAttempt)
        .where(col(LoginAttempt.id) == attempt_id, col(LoginAttempt.closed_at).is_(None))
        .values(closed_at=now)
    )
    if result.rowcount != 1:
        return None
    return session.exec(select(LoginAttempt).where(LoginAttempt.id == attempt_id)).one()


def ended_login_attempts(
    session: Session, *, now: datetime, used_before: datetime, limit: int
) -> list[LoginAttempt]:
    """Logins that ended with nobody to tell it, offered somewhere and not told yet:
    expired or withdrawn before a browser called back, or called back before
    `used_before` by a callback that never told its end (a process that died)."""
    return list(
        session.exec(
            select(LoginAttempt)
            .where(
                col(LoginAttempt.closed_at).is_(None),
                or_(
                    col(LoginAttempt.dm_ts).is_not(None),
                    col(LoginAttempt.reply_url_encrypted).is_not(None),
                ),
                or_(
                    and_(
                        col(LoginAttempt.consumed_at).is_(None),
                        or_(
                            col(LoginAttempt.expires_at) <= now,
                            col(LoginAttempt.withdrawn_at).is_not(None),
                        ),
                    ),
                    col(LoginAttempt.consumed_at) < used_before,
                ),
            )
            .order_by(col(LoginAttempt.id))
            .limit(limit)
        ).all()
    )


# ---- links -----------------------------------------------------------------------------


def accounts_for_api_user(session: Session, *, org_id: str, sf_user_id: str) -> list[VccAccount]:
    return list(
        session.exec(
            select(VccAccount)
            .where(
                VccAccount.org_id == org_id,
                VccAccount.sf_user_id == sf_user_id,
                VccAccount.status == LinkStatus.LINKED,
            )
            .order_by(col(VccAccount.linked_at))
        ).all()
    )


def lock_api_user(session: Session, *, org_id: str, sf_user_id: str, now: datetime) -> None:
    """Serialise everyone linking this API user until the transaction ends.

    The row is created if missing and then locked (FOR UPDATE on PostgreSQL; on SQLite the
    transaction already holds the database's write lock), so counting and taking a slot
    cannot interleave with another linker's.
    """
    _insert_ignoring_conflict(
        session, ApiUser, org_id=org_id, sf_user_id=sf_user_id, created_at=now
    )
    session.exec(
        select(ApiUser)
        .where(ApiUser.org_id == org_id, ApiUser.sf_user_id == sf_user_id)
        .with_for_update()
    ).one()


def _free_slot(
    session: Session, *, team_id: str, account_id: str, org_id: str, sf_user_id: str
) -> int:
    others = [
        a
        for a in accounts_for_api_user(session, org_id=org_id, sf_user_id=sf_user_id)
        if (a.team_id, a.account_id) != (team_id, account_id)
    ]
    taken = {a.api_user_slot for a in others}
    free = [n for n in range(1, MAX_ACCOUNTS_PER_API_USER + 1) if n not in taken]
    if len(others) >= MAX_ACCOUNTS_PER_API_USER or not free:
        raise ApiUserFull([(a.team_id, a.account_id) for a in others])
    return free[0]


def save_link(
    session: Session,
    *,
    team_id: str,
    account_id: str,
    link: LinkRecord,
    now: datetime,
    enterprise_id: str | None = None,
) -> SavedLink:
    """Record a completed link in one of the API user's five slots.

    Raises ApiUserFull when the API user already serves five other VCC accounts
    (relinking the same account keeps its slot, so it does not count twice).
    """
    assert link.org_id is not None and link.sf_user_id is not None
    lock_api_user(session, org_id=link.org_id, sf_user_id=link.sf_user_id, now=now)
    account = get_account(session, team_id=team_id, account_id=account_id, for_update=True)
    if account is None:
        account = VccAccount(team_id=team_id, account_id=account_id)
    same_user = (
        account.status == LinkStatus.LINKED
        and (account.org_id, account.sf_user_id) == (link.org_id, link.sf_user_id)
        and account.api_user_slot is not None
    )
    if same_user:
        slot = account.api_user_slot
    else:
        slot = _free_slot(
            session,
            team_id=team_id,
            account_id=account_id,
            org_id=link.org_id,
            sf_user_id=link.sf_user_id,
        )
        # Leave the old slot before taking the new one: the unique constraint sees both.
        account.api_user_slot = None
        session.add(account)
        session.flush()
    saved = SavedLink(
        account=account,
        replaced_token=account.refresh_token_encrypted,
        replaced_host=account.login_host,
        health_before=Health(account.health),
    )
    # The notification channel is chosen explicitly (/vcc channel); a link run elsewhere
    # only sets it for an account that has none yet.
    channel = account.notify_channel or link.notify_channel
    account.sqlmodel_update(
        link,
        update={
            "notify_channel": channel,
            "enterprise_id": enterprise_id,
            "api_user_slot": slot,
            "status": LinkStatus.LINKED,
            "linked_at": now,
            "health": Health.HEALTHY,
            "health_reason": None,
            "health_checked_at": now,
            "next_check_at": None,
            "check_lease_until": None,
            "updated_at": now,
        },
    )
    session.add(account)
    session.flush()
    return saved


_UNLINKED = {
    # The notification channel stays: it is where the account's next link is announced.
    **{name: None for name in LinkFields.model_fields if name != "notify_channel"},
    "status": LinkStatus.UNLINKED,
    "api_user_slot": None,
    "refresh_token_encrypted": None,
    "linked_at": None,
    "next_check_at": None,
    "check_lease_until": None,
    "health": Health.UNKNOWN,
    "health_reason": None,
}


def mark_unlinked(
    session: Session, *, team_id: str, account_id: str, expected_token: str | None, now: datetime
) -> VccAccount:
    """Clear a link; raises LinkReplaced if it changed since the caller read it."""
    account = _current(session, team_id=team_id, account_id=account_id, token=expected_token)
    account.sqlmodel_update({**_UNLINKED, "updated_at": now})
    session.add(account)
    session.flush()
    return account


def record_health(
    session: Session,
    *,
    team_id: str,
    account_id: str,
    expected_token: str | None,
    health: Health,
    reason: str | None,
    now: datetime,
    permission_warnings: str | None = None,
) -> HealthRecorded:
    """Store a check's result and release its lease; returns the row and the health before.

    Raises LinkReplaced if the link changed while it was checked (the result is about an
    old token). The row is locked, so of two checks finishing together one sees the change.
    """
    account = _current(session, team_id=team_id, account_id=account_id, token=expected_token)
    before = Health(account.health)
    changes: dict[str, object] = {
        "health": health,
        "health_reason": reason,
        "health_checked_at": now,
        "check_lease_until": None,
        "updated_at": now,
    }
    if permission_warnings is not None:
        changes["permission_warnings"] = permission_warnings
    account.sqlmodel_update(changes)
    session.add(account)
    session.flush()
    return HealthRecorded(account=account, before=before)


def release_check(session: Session, *, account_pk: int) -> None:
    """End a check that found nothing to record (Salesforce did not answer)."""
    session.exec(
        update(VccAccount).where(col(VccAccount.id) == account_pk).values(check_lease_until=None)
    )


def insert_account(session: Session, account: VccAccount) -> VccAccount:
    """Add an account row as given (imports and fixtures)."""
    session.add(account)
    session.flush()
    return account


# ---- token custody: tokens between Salesforce's answer and their link ------------------


def add_pending_token(
    session: Session,
    *,
    login_host: str,
    token_encrypted: str,
    team_id: str,
    account_id: str,
    now: datetime,
) -> PendingToken:
    pending = PendingToken(
        login_host=login_host,
        token_encrypted=token_encrypted,
        team_id=team_id,
        account_id=account_id,
        created_at=now,
    )
    session.add(pending)
    session.flush()
    return pending


def delete_pending_token(session: Session, *, pending_id: int) -> None:
    session.exec(delete(PendingToken).where(col(PendingToken.id) == pending_id))


def stale_pending_tokens(
    session: Session, *, created_before: datetime, now: datetime
) -> list[PendingToken]:
    """Pending tokens older than `created_before` whose next revoke is due."""
    return list(
        session.exec(
            select(PendingToken).where(
                col(PendingToken.created_at) < created_before,
                or_(col(PendingToken.next_try_at).is_(None), col(PendingToken.next_try_at) <= now),
            )
        ).all()
    )


def postpone_pending_token(
    session: Session, *, pending_id: int, revoke_tries: int, next_try_at: datetime
) -> None:
    """A revoke Salesforce did not answer: count it, and when to try again."""
    session.exec(
        update(PendingToken)
        .where(col(PendingToken.id) == pending_id)
        .values(revoke_tries=revoke_tries, next_try_at=next_try_at)
    )


# ---- audit trail ---------------------------------------------------------------------


def add_event(
    session: Session,
    *,
    team_id: str,
    account_id: str,
    event: AuditKind,
    actor: str,
    now: datetime,
    org_id: str | None = None,
    sf_username: str | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        AuditEvent(
            team_id=team_id,
            account_id=account_id,
            event=event.value,
            actor=actor,
            org_id=org_id,
            sf_username=sf_username,
            detail=detail,
            created_at=now,
        )
    )
    session.flush()


def recent_events(
    session: Session, *, team_id: str, account_id: str, limit: int = 10
) -> list[AuditEvent]:
    return list(
        session.exec(
            select(AuditEvent)
            .where(AuditEvent.team_id == team_id, AuditEvent.account_id == account_id)
            .order_by(col(AuditEvent.id).desc())
            .limit(limit)
        ).all()
    )


def all_events(session: Session, *, account_id: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(col(AuditEvent.id))
    if account_id is not None:
        query = query.where(AuditEvent.account_id == account_id)
    return list(session.exec(query).all())


# ---- health checks: one at a time per account, across replicas ---------------------------


def workspace_accounts(session: Session, *, team_id: str | None = None) -> list[VccAccount]:
    """Every account of one workspace (or of all), for operators."""
    query = select(VccAccount).order_by(col(VccAccount.team_id), col(VccAccount.account_id))
    if team_id is not None:
        query = query.where(VccAccount.team_id == team_id)
    return list(session.exec(query))


def linked_accounts(session: Session) -> list[VccAccount]:
    """Every Linked account, of every workspace."""
    return list(
        session.exec(
            select(VccAccount)
            .where(VccAccount.status == LinkStatus.LINKED)
            .order_by(col(VccAccount.team_id), col(VccAccount.account_id))
        ).all()
    )


def due_for_check(
    session: Session, *, now: datetime, limit: int, after_id: int = 0
) -> list[VccAccount]:
    """Linked accounts due for a check, by id, after `after_id`.

    A monitor pass pages by id (keyset): a page never repeats a row an earlier page held,
    whether its claim was won, lost, or not yet taken by a check still under way.
    """
    return list(
        session.exec(
            select(VccAccount)
            .where(
                VccAccount.status == LinkStatus.LINKED,
                or_(
                    col(VccAccount.next_check_at).is_(None),
                    col(VccAccount.next_check_at) <= now,
                ),
                col(VccAccount.id) > after_id,
            )
            .order_by(col(VccAccount.id))
            .limit(limit)
        ).all()
    )


def hasten_checks(session: Session, *, org_id: str, now: datetime) -> int:
    """Make the org's other healthy links due now (the monitor's next tick checks them)."""
    result = session.exec(
        update(VccAccount)
        .where(
            col(VccAccount.org_id) == org_id,
            col(VccAccount.status) == LinkStatus.LINKED,
            col(VccAccount.health) != Health.BROKEN,
            col(VccAccount.next_check_at) > now,
        )
        .values(next_check_at=now)
    )
    return int(result.rowcount)


def claim_check(
    session: Session,
    *,
    account_pk: int,
    now: datetime,
    lease_until: datetime,
    next_check_at: datetime | None = None,
    seen: datetime | None = None,
) -> bool:
    """Take the check of one account: one conditional UPDATE, so one replica wins.

    Nobody may hold the lease (a check under way). A scheduled check (the monitor's,
    which passes `next_check_at`) also needs next_check_at to be the value it has `seen`,
    and moves it one interval ahead, so each is taken once per interval.
    """
    conditions = [
        col(VccAccount.id) == account_pk,
        col(VccAccount.status) == LinkStatus.LINKED,
        or_(
            col(VccAccount.check_lease_until).is_(None),
            col(VccAccount.check_lease_until) <= now,
        ),
    ]
    values: dict[str, datetime] = {"check_lease_until": lease_until}
    if next_check_at is not None:
        conditions.append(
            col(VccAccount.next_check_at).is_(None)
            if seen is None
            else col(VccAccount.next_check_at) == seen
        )
        values["next_check_at"] = next_check_at
    result = session.exec(update(VccAccount).where(*conditions).values(**values))
    return result.rowcount == 1


# ---- tokens, for key rotation and rotated refresh tokens ---------------------------------


def accounts_with_tokens(session: Session) -> list[VccAccount]:
    return list(
        session.exec(
            select(VccAccount)
            .where(col(VccAccount.refresh_token_encrypted).is_not(None))
            .order_by(col(VccAccount.id))
        ).all()
    )


def all_pending_tokens(session: Session) -> list[PendingToken]:
    return list(session.exec(select(PendingToken).order_by(col(PendingToken.id))).all())


def replace_token(session: Session, *, account_pk: int, old: str, new: str) -> bool:
    """Swap an account's encrypted token unless it changed meanwhile (a lost race)."""
    result = session.exec(
        update(VccAccount)
        .where(col(VccAccount.id) == account_pk, col(VccAccount.refresh_token_encrypted) == old)
        .values(refresh_token_encrypted=new)
    )
    return result.rowcount == 1


def replace_pending_token(session: Session, *, pending_pk: int, new: str) -> None:
    session.exec(
        update(PendingToken).where(col(PendingToken.id) == pending_pk).values(token_encrypted=new)
    )


# ---- at most once, and at most so often ------------------------------------------------


def _insert_ignoring_conflict(session: Session, model: type, **values: object) -> bool:
    """INSERT … ON CONFLICT DO NOTHING (PostgreSQL and SQLite, the two we support).

    True when the row was inserted. RETURNING tells, where psycopg's rowcount for this
    statement does not.
    """
    dialect = session.get_bind().dialect.name
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    table = model.__table__  # type: ignore[attr-defined]
    statement = insert_(table).values(**values).on_conflict_do_nothing()
    key = next(iter(table.primary_key.columns))
    return session.execute(statement.returning(key)).first() is not None


def claim_once(session: Session, *, key_hash: str, now: datetime, keep_for: timedelta) -> bool:
    """True for the first caller with this key (until it expires); False for the others."""
    session.exec(delete(OnceKey).where(col(OnceKey.expires_at) <= now))
    return (
        _insert_ignoring_conflict(session, OnceKey, key_hash=key_hash, expires_at=now + keep_for)
        == 1
    )


def take_rate(session: Session, *, key: str, now: datetime, window: timedelta, limit: int) -> bool:
    """Count one more for `key` in its window; False once `limit` is used up."""
    _insert_ignoring_conflict(session, RateWindow, key=key, window_start=now, count=0)
    row = session.exec(select(RateWindow).where(RateWindow.key == key).with_for_update()).one()
    if row.window_start + window <= now:
        row.window_start, row.count = now, 0
    if row.count >= limit:
        return False
    row.count += 1
    session.add(row)
    session.flush()
    return True


# ---- legacy import ---------------------------------------------------------------------


def import_legacy_account(
    session: Session,
    *,
    team_id: str,
    account_id: str,
    environment: str,
    sf_username: str,
    org_id: str | None,
    now: datetime,
) -> None:
    """Record one account as Legacy; raises AlreadyLinked rather than replace a link."""
    account = get_account(session, team_id=team_id, account_id=account_id, for_update=True)
    if account is not None and account.status == LinkStatus.LINKED:
        raise AlreadyLinked(f"VCC account {account_id} of team {team_id} is already Linked")
    if account is None:
        account = VccAccount(team_id=team_id, account_id=account_id)
    account.sqlmodel_update(
        {
            "status": LinkStatus.LEGACY,
            "environment": environment,
            "sf_username": sf_username,
            "org_id": org_id,
            "health": Health.UNKNOWN,
            "updated_at": now,
        }
    )
    session.add(account)
    add_event(
        session,
        team_id=team_id,
        account_id=account_id,
        event=AuditKind.LEGACY_IMPORTED,
        actor="operator",
        now=now,
        org_id=org_id,
        sf_username=sf_username,
    )


# ---- the notification channel and the Home tab ---------------------------------------


def set_notify_channel(
    session: Session,
    *,
    team_id: str,
    account_id: str,
    channel_id: str,
    now: datetime,
    enterprise_id: str | None = None,
) -> tuple[VccAccount, str | None]:
    """Make `channel_id` the account's notification channel (the account is created
    Unlinked if it is new). Returns the account and the channel it had before."""
    account = get_account(session, team_id=team_id, account_id=account_id, for_update=True)
    if account is None:
        account = VccAccount(team_id=team_id, account_id=account_id, enterprise_id=enterprise_id)
    before = account.notify_channel
    account.notify_channel = channel_id
    account.updated_at = now
    session.add(account)
    session.flush()
    return account, before


def note_home_viewer(
    session: Session,
    *,
    team_id: str,
    user_id: str,
    enterprise_id: str | None,
    now: datetime,
    page: int | None = None,
) -> int:
    """Remember who opened the Home tab (and, with `page`, the page they turned to);
    returns the page to show them."""
    viewer = session.get(HomeViewer, (team_id, user_id))
    if viewer is None:
        _insert_ignoring_conflict(
            session,
            HomeViewer,
            team_id=team_id,
            user_id=user_id,
            enterprise_id=enterprise_id,
            opened_at=now,
            page=page or 0,
        )
        return page or 0
    viewer.opened_at = now
    viewer.enterprise_id = enterprise_id
    if page is not None:
        viewer.page = page
    session.add(viewer)
    return viewer.page


def home_viewers(
    session: Session, *, team_id: str, since: datetime, limit: int
) -> list[HomeViewer]:
    """Who opened the workspace's Home tab since `since`, most recent first."""
    return list(
        session.exec(
            select(HomeViewer)
            .where(HomeViewer.team_id == team_id, col(HomeViewer.opened_at) >= since)
            .order_by(col(HomeViewer.opened_at).desc())
            .limit(limit)
        )
    )
