"""The only place that writes SQL: keyword-only functions over a Session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Insert, delete, insert, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from storage.models import (
    MAX_ACCOUNTS_PER_API_USER,
    ApiUser,
    AuditEvent,
    AuditKind,
    Health,
    LinkStatus,
    LoginAttempt,
    PendingToken,
    VccAccount,
)

# Login attempts are kept a while after they expire so a late click gets "expired",
# not "unknown"; after that they are only clutter.
ATTEMPT_RETENTION = timedelta(days=1)


class AttemptProblem(StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    OTHER_BROWSER = "other_browser"


class ApiUserFull(Exception):
    """The Salesforce API user already has the maximum number of VCC accounts."""

    def __init__(self, linked: list[tuple[str, str]]) -> None:
        super().__init__(f"API user already linked to {len(linked)} VCC accounts")
        self.linked = linked  # (team id, account id): plain data, valid after the rollback


@dataclass(frozen=True)
class LinkDetails:
    environment: str
    login_host: str
    instance_url: str
    identity_url: str
    org_id: str
    sf_user_id: str
    sf_username: str
    refresh_token_encrypted: str
    permission_warnings: str | None
    linked_by: str
    notify_channel: str


def get_account(
    session: Session, *, team_id: str, account_id: str, for_update: bool = False
) -> VccAccount | None:
    query = select(VccAccount).where(
        VccAccount.team_id == team_id, VccAccount.account_id == account_id
    )
    if for_update:
        query = query.with_for_update()  # a row lock on PostgreSQL; SQLite's is the transaction
    return session.exec(query).first()


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
) -> LoginAttempt:
    session.exec(delete(LoginAttempt).where(col(LoginAttempt.expires_at) < now - ATTEMPT_RETENTION))
    attempt = LoginAttempt(
        link_hash=link_hash,
        team_id=team_id,
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
    if attempt.consumed_at is not None:
        return AttemptProblem.USED
    if attempt.expires_at <= now:
        return AttemptProblem.EXPIRED
    return AttemptProblem.OTHER_BROWSER


def bind_login_attempt(
    session: Session,
    *,
    link_hash: str,
    browser_hash: str,
    state_hash: str,
    code_verifier_encrypted: str,
    now: datetime,
) -> LoginAttempt | AttemptProblem:
    """Bind a login link to the first browser that opens it, with a fresh state.

    The same browser may open it again (a closed tab); a second browser may not. One
    conditional UPDATE decides, so two browsers racing cannot both win.
    """
    result = session.exec(
        update(LoginAttempt)
        .where(
            col(LoginAttempt.link_hash) == link_hash,
            col(LoginAttempt.consumed_at).is_(None),
            col(LoginAttempt.expires_at) > now,
            or_(
                col(LoginAttempt.browser_hash).is_(None),
                col(LoginAttempt.browser_hash) == browser_hash,
            ),
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
    return _diagnose(attempt, now=now)


def consume_login_attempt(
    session: Session, *, state_hash: str, browser_hash: str | None, now: datetime
) -> LoginAttempt | AttemptProblem:
    """Use a state once: one UPDATE whose row count says whether this call won."""
    result = session.exec(
        update(LoginAttempt)
        .where(
            col(LoginAttempt.state_hash) == state_hash,
            col(LoginAttempt.consumed_at).is_(None),
            col(LoginAttempt.expires_at) > now,
            col(LoginAttempt.browser_hash) == (browser_hash or ""),
        )
        .values(consumed_at=now)
    )
    attempt = session.exec(
        select(LoginAttempt).where(LoginAttempt.state_hash == state_hash)
    ).first()
    if result.rowcount == 1 and attempt is not None:
        return attempt
    return _diagnose(attempt, now=now)


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
    values = {"org_id": org_id, "sf_user_id": sf_user_id, "created_at": now}
    dialect = session.get_bind().dialect.name
    stmt: Insert
    if dialect == "postgresql":
        stmt = pg_insert(ApiUser).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite_insert(ApiUser).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two databases above are supported
        stmt = insert(ApiUser).values(**values)
    session.exec(stmt)
    session.exec(
        select(ApiUser)
        .where(ApiUser.org_id == org_id, ApiUser.sf_user_id == sf_user_id)
        .with_for_update()
    ).one()


def save_link(
    session: Session,
    *,
    team_id: str,
    account_id: str,
    details: LinkDetails,
    now: datetime,
) -> tuple[tuple[str, str | None] | None, Health]:
    """Record a completed link in one of the API user's five slots.

    Returns the previous (encrypted token, login host), if any, and the health before.
    Raises ApiUserFull when the API user already serves five other VCC accounts
    (relinking the same account keeps its slot, so it does not count twice).
    """
    lock_api_user(session, org_id=details.org_id, sf_user_id=details.sf_user_id, now=now)
    account = get_account(session, team_id=team_id, account_id=account_id, for_update=True)
    same_user = (
        account is not None
        and account.status == LinkStatus.LINKED
        and (account.org_id, account.sf_user_id) == (details.org_id, details.sf_user_id)
        and account.api_user_slot is not None
    )
    if same_user:
        assert account is not None
        slot = account.api_user_slot
    else:
        others = [
            a
            for a in accounts_for_api_user(
                session, org_id=details.org_id, sf_user_id=details.sf_user_id
            )
            if (a.team_id, a.account_id) != (team_id, account_id)
        ]
        taken = {a.api_user_slot for a in others}
        free = [n for n in range(1, MAX_ACCOUNTS_PER_API_USER + 1) if n not in taken]
        if len(others) >= MAX_ACCOUNTS_PER_API_USER or not free:
            raise ApiUserFull([(a.team_id, a.account_id) for a in others])
        slot = free[0]
    if account is None:
        account = VccAccount(team_id=team_id, account_id=account_id)
    previous = (
        (account.refresh_token_encrypted, account.login_host)
        if account.refresh_token_encrypted
        else None
    )
    health_before = Health(account.health)
    if not same_user:
        # Leave the old slot before taking the new one: the unique constraint sees both.
        account.api_user_slot = None
        session.add(account)
        session.flush()
    account.api_user_slot = slot
    account.status = LinkStatus.LINKED
    account.environment = details.environment
    account.login_host = details.login_host
    account.instance_url = details.instance_url
    account.identity_url = details.identity_url
    account.org_id = details.org_id
    account.sf_user_id = details.sf_user_id
    account.sf_username = details.sf_username
    account.refresh_token_encrypted = details.refresh_token_encrypted
    account.permission_warnings = details.permission_warnings
    account.linked_by = details.linked_by
    account.linked_at = now
    account.notify_channel = details.notify_channel
    account.health = Health.HEALTHY
    account.health_reason = None
    account.health_checked_at = now
    account.next_check_at = None
    account.updated_at = now
    session.add(account)
    session.flush()
    return previous, health_before


def mark_unlinked(
    session: Session, *, team_id: str, account_id: str, expected_token: str | None, now: datetime
) -> VccAccount | None:
    """Clear a link, unless it changed since the caller read it (a relink meanwhile)."""
    account = get_account(session, team_id=team_id, account_id=account_id, for_update=True)
    if account is None or account.refresh_token_encrypted != expected_token:
        return None
    account.status = LinkStatus.UNLINKED
    account.api_user_slot = None
    account.next_check_at = None
    account.refresh_token_encrypted = None
    account.environment = account.login_host = account.instance_url = None
    account.identity_url = account.org_id = account.sf_user_id = account.sf_username = None
    account.permission_warnings = None
    account.linked_by = None
    account.linked_at = None
    account.health = Health.UNKNOWN
    account.health_reason = None
    account.updated_at = now
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
    new_token_encrypted: str | None = None,
    permission_warnings: str | None = None,
) -> Health | None:
    """Store a check's result; returns the health before it, or None if the link changed.

    The row is locked, so of two checks finishing together only one sees the change.
    """
    account = get_account(session, team_id=team_id, account_id=account_id, for_update=True)
    if account is None or account.refresh_token_encrypted != expected_token:
        return None
    previous = Health(account.health)
    account.health = health
    account.health_reason = reason
    account.health_checked_at = now
    if new_token_encrypted is not None:
        account.refresh_token_encrypted = new_token_encrypted
    if permission_warnings is not None:
        account.permission_warnings = permission_warnings
    account.updated_at = now
    session.add(account)
    session.flush()
    return previous


def insert_account(session: Session, account: VccAccount) -> VccAccount:
    """Add an account row as given (imports and fixtures)."""
    session.add(account)
    session.flush()
    return account


# ---- crash safety: tokens between exchange and commit ---------------------------------


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


def stale_pending_tokens(session: Session, *, created_before: datetime) -> list[PendingToken]:
    return list(
        session.exec(
            select(PendingToken).where(col(PendingToken.created_at) < created_before)
        ).all()
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


# ---- health monitoring ---------------------------------------------------------------


def due_for_check(session: Session, *, now: datetime, limit: int) -> list[VccAccount]:
    return list(
        session.exec(
            select(VccAccount)
            .where(
                VccAccount.status == LinkStatus.LINKED,
                or_(
                    col(VccAccount.next_check_at).is_(None),
                    col(VccAccount.next_check_at) <= now,
                ),
            )
            .order_by(col(VccAccount.next_check_at), col(VccAccount.id))
            .limit(limit)
        ).all()
    )


def claim_check(
    session: Session, *, account_pk: int, seen: datetime | None, until: datetime
) -> bool:
    """Take the next check of one account; exactly one replica wins each interval."""
    condition = (
        col(VccAccount.next_check_at).is_(None)
        if seen is None
        else col(VccAccount.next_check_at) == seen
    )
    result = session.exec(
        update(VccAccount)
        .where(col(VccAccount.id) == account_pk, condition)
        .values(next_check_at=until)
    )
    return result.rowcount == 1


# ---- tokens, for key rotation ----------------------------------------------------------


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
    """Swap an account's encrypted token unless it changed meanwhile."""
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
) -> str | None:
    """Record one account as Legacy; returns a problem instead if it is already Linked."""
    account = get_account(session, team_id=team_id, account_id=account_id, for_update=True)
    if account is not None and account.status == LinkStatus.LINKED:
        return f"VCC account {account_id} of team {team_id} is already Linked; not replaced"
    if account is None:
        account = VccAccount(team_id=team_id, account_id=account_id)
    account.status = LinkStatus.LEGACY
    account.environment = environment
    account.sf_username = sf_username
    account.org_id = org_id
    account.health = Health.UNKNOWN
    account.updated_at = now
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
    return None
