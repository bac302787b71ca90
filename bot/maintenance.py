"""Operator tasks behind `vcc-bot import-legacy`, `audit` and `rotate-key`."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import BinaryIO, TextIO

from sqlmodel import Session

from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import ACCOUNT_ID, Environment
from bot.links import LinkHealth
from bot.messages import UNDECRYPTABLE
from storage import repository as repo
from storage.db import Database
from storage.models import utcnow

TEAM_ID = re.compile(r"[TE][A-Z0-9]{2,31}")
ORG_ID = re.compile(r"00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?")
USERNAME = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
LEGACY_ENVIRONMENTS = {Environment.PRODUCTION.value, Environment.SANDBOX.value}
LEGACY_COLUMNS = ["team id", "account id", "environment", "API username", "org id"]
# A legacy file lists a few thousand accounts at most; the cap bounds time, memory and output.
LEGACY_MAX_BYTES = 10 * 1024 * 1024
LEGACY_MAX_PROBLEMS = 20  # shown; the rest are counted
# C0, DEL and C1: no cell needs them, and they hide or garble what an admin reads.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A spreadsheet runs a cell starting with one of these as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
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


class LegacyFileError(Exception):
    """The file cannot be read as a legacy CSV at all: too large, or not UTF-8."""


class LegacyImportError(Exception):
    """The file has bad rows; nothing was imported.

    `problems` holds the first LEGACY_MAX_PROBLEMS of them, `more` counts the rest.
    """

    def __init__(self, problems: list[str], more: int = 0) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.more = more

    def report(self) -> list[str]:
        """The problems to print, one a line."""
        if not self.more:
            return self.problems
        plural = "s" if self.more > 1 else ""
        return [*self.problems, f"… and {self.more} more problem{plural}"]


class _Problems:
    """Collects problems, keeping only the first few: a bad file may have millions."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.count = 0

    def add(self, problem: str) -> None:
        self.count += 1
        if len(self.shown) < LEGACY_MAX_PROBLEMS:
            self.shown.append(problem)

    def __bool__(self) -> bool:
        return self.count > 0

    def raise_if_any(self) -> None:
        if self.count:
            raise LegacyImportError(self.shown, self.count - len(self.shown))


@dataclass(frozen=True, slots=True)
class LegacyRow:
    line: int
    team_id: str
    account_id: str
    environment: str
    sf_username: str
    org_id: str | None


def legacy_lines(file: BinaryIO, *, limit: int = LEGACY_MAX_BYTES) -> Iterator[str]:
    """The file's lines as text, read one at a time and never more than `limit` bytes.

    UTF-8 with or without a BOM; CR, LF and CRLF all end a line, as Excel may write any.
    The size is checked before anything is read when the file has one, and while reading
    otherwise (a pipe or a device has none).
    """
    too_large = (
        f"it is larger than {limit // (1024 * 1024)} MB, the limit for one import; "
        "split it into smaller files"
    )
    try:
        size = os.fstat(file.fileno()).st_size
    except (OSError, ValueError):
        size = 0  # not a file on disk; the reading below is bounded all the same
    if size > limit:
        raise LegacyFileError(too_large)
    read = 0
    # readline's bound keeps a file without line breaks from being read whole.
    while raw := file.readline(limit - read + 1):
        offset, read = read, read + len(raw)
        if read > limit:
            raise LegacyFileError(too_large)
        bom = len(codecs.BOM_UTF8) if offset == 0 and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LegacyFileError(
                f"not UTF-8 text (byte {offset + bom + exc.start}); save it as CSV UTF-8"
            ) from None
        # Universal newlines, as reading the whole file as text did: lone CRs end lines too.
        yield from io.StringIO(text, newline=None)


def _shown(value: str) -> str:
    """A cell as quoted in a problem: its repr, shortened, so a huge cell is not echoed."""
    return repr(value) if len(value) <= 80 else repr(value[:80]) + "…"


def _control_character(cells: list[str]) -> str | None:
    for number, cell in enumerate(cells, 1):
        if found := CONTROL.search(cell):
            column = f"column {number}"
            if number <= len(LEGACY_COLUMNS):
                column += f" ({LEGACY_COLUMNS[number - 1]})"
            return (
                f"{column} has the control character U+{ord(found[0]):04X}; "
                "cells may not contain control characters"
            )
    return None


def parse_legacy_csv(lines: Iterable[str]) -> list[LegacyRow]:
    """Rows of team id, account id, environment, API username, optional org id.

    A header row is allowed. Every bad row is reported by its line number (the first
    LEGACY_MAX_PROBLEMS of them, and how many more).
    """
    rows: list[LegacyRow] = []
    problems = _Problems()
    seen: dict[tuple[str, str], int] = {}
    reader = csv.reader(lines)
    while True:
        try:
            raw_cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # A field over csv's limit, say; the reader resumes on the next line.
            problems.add(f"line {reader.line_num}: not readable as CSV: {exc}")
            continue
        line = reader.line_num
        if control := _control_character(raw_cells):
            problems.add(f"line {line}: {control}")
            continue
        cells = [c.strip() for c in raw_cells]
        if not any(cells):
            continue
        if not rows and not problems and cells[0].lower().replace(" ", "_") in ("team_id", "team"):
            continue  # the header
        if len(cells) not in (4, 5):
            problems.add(
                f"line {line}: expected 4 or 5 columns (team id, account id, environment, "
                f"API username, optional org id), found {len(cells)}"
            )
            continue
        team_id, account_id, environment, username = cells[:4]
        org_id = cells[4] if len(cells) == 5 and cells[4] else None
        environment = environment.lower()
        bad = []
        if not TEAM_ID.fullmatch(team_id):
            bad.append(f"team id {_shown(team_id)} is not a Slack team id (T…)")
        if not ACCOUNT_ID.fullmatch(account_id):
            bad.append(f"account id {_shown(account_id)} is not a VCC account id")
        if environment not in LEGACY_ENVIRONMENTS:
            bad.append(f"environment {_shown(cells[2])} is not production or sandbox")
        if not USERNAME.fullmatch(username) or len(username) > 255:
            bad.append(f"API username {_shown(username)} is not a Salesforce username")
        if org_id is not None and not ORG_ID.fullmatch(org_id):
            bad.append(f"org id {_shown(org_id)} is not a Salesforce org id (00D…)")
        first = seen.setdefault((team_id, account_id), line)
        if first != line:
            bad.append(f"account {account_id} of team {team_id} is already on line {first}")
        if bad:
            problems.add(f"line {line}: " + "; ".join(bad))
            continue
        rows.append(LegacyRow(line, team_id, account_id, environment, username, org_id))
    problems.raise_if_any()
    if not rows:
        raise LegacyImportError(["the file has no rows to import"])
    return rows


def import_legacy(db: Database, rows: Sequence[LegacyRow], *, now: datetime | None = None) -> int:
    """Record every row as Legacy in one transaction: all rows, or none."""
    when = now or utcnow()

    def write(session: Session) -> int:
        problems = _Problems()
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
                problems.add(f"line {row.line}: {exc}; not replaced")
        problems.raise_if_any()  # rolls the whole transaction back
        return len(rows)

    return db.call(write)


def _csv_cell(value: object) -> object:
    """The value, with a leading ' if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


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
        # Only the CSV is escaped: it is what gets opened in a spreadsheet, and JSON readers
        # need the values as stored.
        writer.writerows({k: _csv_cell(v) for k, v in r.items()} for r in records)
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
