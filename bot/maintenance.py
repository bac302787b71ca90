"""Operator tasks behind `vcc-bot import-legacy`, `audit` and `rotate-key`."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TextIO

from sqlmodel import Session

from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import ACCOUNT_ID, Environment
from bot.links import LinkHealth
from bot.messages import UNDECRYPTABLE
from storage import repository as repo
from storage.db import Database
from storage.models import utcnow

TEAM_ID = re.compile(r"^[TE][A-Z0-9]{2,31}$")
ORG_ID = re.compile(r"^00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
USERNAME = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LEGACY_ENVIRONMENTS = {Environment.PRODUCTION.value, Environment.SANDBOX.value}
AUDIT_COLUMNS = [
    "id",
    "created_at",
    "team_id",
    "account_id",
    "event",
    "actor",
    "org_id",
    "sf_username",
    "detail",
]


class LegacyImportError(Exception):
    """The file has bad rows; nothing was imported."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class LegacyRow:
    line: int
    team_id: str
    account_id: str
    environment: str
    sf_username: str
    org_id: str | None


def parse_legacy_csv(text: str) -> list[LegacyRow]:
    """Rows of team id, account id, environment, API username, optional org id.

    A header row is allowed. Every bad row is reported by its line number.
    """
    rows: list[LegacyRow] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    reader = csv.reader(io.StringIO(text))
    for cells in reader:
        line = reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        if not rows and not problems and cells[0].lower().replace(" ", "_") in ("team_id", "team"):
            continue  # the header
        if len(cells) not in (4, 5):
            problems.append(
                f"line {line}: expected 4 or 5 columns (team id, account id, environment, "
                f"API username, optional org id), found {len(cells)}"
            )
            continue
        team_id, account_id, environment, username = cells[:4]
        org_id = cells[4] if len(cells) == 5 and cells[4] else None
        environment = environment.lower()
        bad = []
        if not TEAM_ID.match(team_id):
            bad.append(f"team id {team_id!r} is not a Slack team id (T…)")
        if not ACCOUNT_ID.match(account_id):
            bad.append(f"account id {account_id!r} is not a VCC account id")
        if environment not in LEGACY_ENVIRONMENTS:
            bad.append(f"environment {cells[2]!r} is not production or sandbox")
        if not USERNAME.match(username) or len(username) > 255:
            bad.append(f"API username {username!r} is not a Salesforce username")
        if org_id is not None and not ORG_ID.match(org_id):
            bad.append(f"org id {org_id!r} is not a Salesforce org id (00D…)")
        first = seen.setdefault((team_id, account_id), line)
        if first != line:
            bad.append(f"account {account_id} of team {team_id} is already on line {first}")
        if bad:
            problems.append(f"line {line}: " + "; ".join(bad))
            continue
        rows.append(LegacyRow(line, team_id, account_id, environment, username, org_id))
    if problems:
        raise LegacyImportError(problems)
    if not rows:
        raise LegacyImportError(["the file has no rows to import"])
    return rows


def import_legacy(db: Database, text: str, *, now: datetime | None = None) -> int:
    """Record every row as Legacy in one transaction: all rows, or none."""
    rows = parse_legacy_csv(text)
    when = now or utcnow()

    def write(session: Session) -> int:
        problems = []
        for row in rows:
            try:
                repo.import_legacy_account(
                    session,
                    team_id=row.team_id,
                    account_id=row.account_id,
                    environment=row.environment,
                    sf_username=row.sf_username,
                    org_id=row.org_id,
                    now=when,
                )
            except repo.AlreadyLinked as exc:
                problems.append(f"line {row.line}: {exc}; not replaced")
        if problems:
            raise LegacyImportError(problems)  # rolls the whole transaction back
        return len(rows)

    return db.call(write)


def export_audit(db: Database, out: TextIO, *, account_id: str | None, fmt: str) -> int:
    events = db.call(partial(repo.all_events, account_id=account_id), write=False)
    records = [
        {
            "id": e.id,
            "created_at": e.created_at.isoformat(),
            "team_id": e.team_id,
            "account_id": e.account_id,
            "event": e.event,
            "actor": e.actor,
            "org_id": e.org_id,
            "sf_username": e.sf_username,
            "detail": e.detail,
        }
        for e in events
    ]
    if fmt == "json":
        json.dump(records, out, indent=2)
        out.write("\n")
    else:
        writer = csv.DictWriter(out, fieldnames=AUDIT_COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    return len(records)


@dataclass
class RotationReport:
    rotated: int = 0
    undecryptable: list[str] = field(default_factory=list)  # "team/account"


async def rotate_keys(db: Database, cipher: TokenCipher, health: LinkHealth) -> RotationReport:
    """Re-encrypt every stored token with the first key; mark undecryptable links broken."""
    report = RotationReport()
    for account in await db.read(repo.accounts_with_tokens):
        assert account.id is not None and account.refresh_token_encrypted is not None
        old = account.refresh_token_encrypted
        try:
            new = cipher.rotate(old)
        except UndecryptableToken:
            report.undecryptable.append(f"{account.team_id}/{account.account_id}")
            await health.mark_broken(
                account.team_id, account.account_id, UNDECRYPTABLE, actor="operator"
            )
            continue
        if await db.write(partial(repo.replace_token, account_pk=account.id, old=old, new=new)):
            report.rotated += 1
    for pending in await db.read(repo.all_pending_tokens):
        assert pending.id is not None
        try:
            new = cipher.rotate(pending.token_encrypted)
        except UndecryptableToken:
            continue  # cannot be revoked either; revoke_stale_pending will drop it
        await db.write(partial(repo.replace_pending_token, pending_pk=pending.id, new=new))
    return report
