"""The only place that writes SQL: keyword-only functions over a Session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from storage.models import Health, LinkStatus, LoginAttempt, VccAccount

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


def get_account(session: Session, *, team_id: str, account_id: str) -> VccAccount | None:
    return session.exec(
        select(VccAccount).where(VccAccount.team_id == team_id, VccAccount.account_id == account_id)
    ).first()


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
) -> LoginAttempt:
    session.exec(delete(LoginAttempt).where(col(LoginAttempt.expires_at) < now - ATTEMPT_RETENTION))
    attempt = LoginAttempt(
        link_hash=link_hash,
        team_id=team_id,
        slack_user_id=slack_user_id,
        account_id=account_id,
        environment=environment,
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


def save_link(
    session: Session,
    *,
    team_id: str,
    account_id: str,
    details: LinkDetails,
    now: datetime,
    max_accounts_per_user: int,
) -> tuple[str, str | None] | None:
    """Record a completed link; returns the previous (encrypted token, login host), if any.

    Raises ApiUserFull when the API user already serves the maximum number of other
    VCC accounts (relinking the same account does not count twice).
    """
    others = [
        a
        for a in accounts_for_api_user(
            session, org_id=details.org_id, sf_user_id=details.sf_user_id
        )
        if (a.team_id, a.account_id) != (team_id, account_id)
    ]
    if len(others) >= max_accounts_per_user:
        raise ApiUserFull([(a.team_id, a.account_id) for a in others])
    account = get_account(session, team_id=team_id, account_id=account_id)
    if account is None:
        account = VccAccount(team_id=team_id, account_id=account_id)
    previous = (
        (account.refresh_token_encrypted, account.login_host)
        if account.refresh_token_encrypted
        else None
    )
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
    account.updated_at = now
    session.add(account)
    session.flush()
    return previous


def mark_unlinked(
    session: Session, *, team_id: str, account_id: str, expected_token: str | None, now: datetime
) -> VccAccount | None:
    """Clear a link, unless it changed since the caller read it (a relink meanwhile)."""
    account = get_account(session, team_id=team_id, account_id=account_id)
    if account is None or account.refresh_token_encrypted != expected_token:
        return None
    account.status = LinkStatus.UNLINKED
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
) -> Health | None:
    """Store a check's result; returns the health before it, or None if the link changed."""
    account = get_account(session, team_id=team_id, account_id=account_id)
    if account is None or account.refresh_token_encrypted != expected_token:
        return None
    previous = Health(account.health)
    account.health = health
    account.health_reason = reason
    account.health_checked_at = now
    if new_token_encrypted is not None:
        account.refresh_token_encrypted = new_token_encrypted
    account.updated_at = now
    session.add(account)
    session.flush()
    return previous


def insert_account(session: Session, account: VccAccount) -> VccAccount:
    """Add an account row as given (imports and fixtures)."""
    session.add(account)
    session.flush()
    return account
