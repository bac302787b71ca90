"""Accounts linked by the old method (`vcc-bot import-legacy`), relinking them, and the audit
trail as admins read it (`/vcc history`, the status's recent history) and operators export it
(`vcc-bot audit`). The CLI runs as its own process on the test's database."""

from __future__ import annotations

import csv
import io
import json
import re
import resource
import subprocess
from datetime import datetime

from sqlmodel import select

from bot import ids
from bot.domain import AuditKind
from storage import repository as repo
from storage.db import Database, create_db_engine
from storage.models import AuditEvent, VccAccount, utcnow
from tests.support import ADMIN, CHANNEL, MEMBER, buttons, link, start_link, text_of
from tests.test_cli import VCC_BOT, bare_env, vcc_bot

HEADER = "team_id,account_id,environment,api_username,org_id"
GOOD_ROWS = [
    "T0001,acme,Production,vcc-api@acme.example,00D000000000001AAA",
    "T0001,uat,sandbox,uat-api@acme.example.uat",
    "T0001,emea,PRODUCTION,emea-api@acme.example,",
]
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
LABEL = re.compile(r" · \*([^*]+)\* by ")
LEGACY_MAX_BYTES = 10 * 1024 * 1024  # the documented cap of an import-legacy file


# ---- helpers --------------------------------------------------------------------------


def cli(tmp_path, database_url, *args):
    return vcc_bot(tmp_path, *args, DATABASE_URL=database_url)


def import_legacy(tmp_path, database_url, *lines, name="legacy.csv"):
    (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cli(tmp_path, database_url, "import-legacy", name)


def audit(tmp_path, database_url, *args):
    result = cli(tmp_path, database_url, "audit", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def audit_exactly(tmp_path, database_url, *args):
    """The export byte for byte: `audit` reads text, which turns a CR inside a cell into LF."""
    result = subprocess.run(
        [str(VCC_BOT), "audit", *args],
        env=bare_env(DATABASE_URL=database_url),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("utf-8")


def accounts(bot) -> dict[str, str]:
    """Every stored account's status, by account id."""
    with bot.runtime.db.transaction() as session:
        return {a.account_id: a.status for a in session.exec(select(VccAccount)).all()}


def event_kinds(bot) -> list[str]:
    with bot.runtime.db.transaction() as session:
        return [e.event for e in session.exec(select(AuditEvent)).all()]


def status(slack_client, account, count=1, user=ADMIN):
    """The `/vcc status` reply."""
    return slack_client.replies(slack_client.command(f"status {account}", user=user), count)[-1]


def history(slack_client, account="acme", user=ADMIN):
    return slack_client.replies(slack_client.command(f"history {account}", user=user))[0]


def history_lines(message) -> list[str]:
    return [line for line in text_of(message).splitlines() if line.startswith("• ")]


def recent_history(message) -> list[str]:
    """The lines of the status's "Recent history" context, if it has one."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            body = element.get("text") or ""
            if block["type"] == "context" and body.startswith("*Recent history*"):
                return body.splitlines()[1:]
    return []


def labels(lines: list[str]) -> list[str]:
    return [LABEL.search(line)[1] for line in lines]


def notices(slack, words):
    return [m for m in slack.messages_to(CHANNEL) if words in text_of(m)]


def unlink(slack_client, account="acme"):
    assert "will stop working" in text_of(
        slack_client.replies(slack_client.command(f"unlink {account}"))[0]
    )
    done = slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, account))[0]
    assert "now *Unlinked*" in text_of(done)


# ---- import-legacy --------------------------------------------------------------------


def test_imported_accounts_show_as_legacy_with_a_relink_button(
    tmp_path, database_url, slack_client, bot
):
    result = import_legacy(tmp_path, database_url, HEADER, *GOOD_ROWS)
    assert result.returncode == 0, result.stderr
    assert "Imported 3 legacy account(s)" in result.stdout
    assert accounts(bot) == {"acme": "Legacy", "uat": "Legacy", "emea": "Legacy"}
    expected = {
        "acme": ("vcc-api@acme.example", "Production"),
        "uat": ("uat-api@acme.example.uat", "Sandbox"),
        "emea": ("emea-api@acme.example", "Production"),
    }
    for account, (username, environment) in expected.items():
        reply = status(slack_client, account)
        body = text_of(reply)
        assert "*Legacy*" in body and "Relink recommended" in body
        assert f"{username} ({environment})" in body
        assert buttons(reply)[ids.RELINK]["value"] == account
        assert labels(recent_history(reply)) == ["Imported as Legacy"]
        assert "by operator" in recent_history(reply)[0]


def test_bad_rows_are_each_named_and_nothing_is_imported(tmp_path, database_url, bot):
    result = import_legacy(
        tmp_path,
        database_url,
        HEADER,
        GOOD_ROWS[0],  # line 2
        "T0001,short,production",  # line 3: too few columns
        "X0001,badteam,production,a@acme.example",  # line 4
        "T0001,badenv,staging,a@acme.example",  # line 5
        "T0001,baduser,sandbox,not-a-username",  # line 6
        "T0001,badorg,production,a@acme.example,001000000000001AAA",  # line 7
        "T0001,acme,sandbox,other@acme.example",  # line 8: acme again
        GOOD_ROWS[1],  # line 9
    )
    assert result.returncode == 1
    problems = [p for p in map(str.strip, result.stderr.splitlines()) if p.startswith("line ")]
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in range(3, 9)]
    assert "found 3" in problems[0]
    assert "'X0001'" in problems[1]
    assert "'staging'" in problems[2]
    assert "'not-a-username'" in problems[3]
    assert "'001000000000001AAA'" in problems[4]
    assert "already on line 2" in problems[5]
    assert "Nothing was imported" in result.stderr
    assert "Traceback" not in result.stderr
    assert accounts(bot) == {}
    assert event_kinds(bot) == []


def test_a_row_for_a_linked_account_fails_the_whole_file(
    tmp_path, database_url, slack_client, browser, bot, salesforce
):
    assert link(slack_client, browser, "acme").status_code == 200
    result = import_legacy(
        tmp_path,
        database_url,
        HEADER,
        "T0001,beta,production,beta-api@acme.example",
        "T0001,acme,production,old-api@acme.example",
        "T0001,gamma,sandbox,gamma-api@acme.example",
    )
    assert result.returncode == 1
    assert "line 3:" in result.stderr and "already Linked" in result.stderr
    assert "line 2:" not in result.stderr and "line 4:" not in result.stderr
    assert accounts(bot) == {"acme": "Linked"}  # neither beta nor gamma: all or nothing
    assert "legacy_imported" not in event_kinds(bot)
    with bot.runtime.db.transaction() as session:
        acme = repo.get_account(session, team_id="T0001", account_id="acme")
    assert acme.sf_username == salesforce.api_user.username


def test_importing_the_same_file_again_keeps_one_legacy_row_each(
    tmp_path, database_url, slack_client, bot
):
    for _ in range(2):
        result = import_legacy(tmp_path, database_url, HEADER, *GOOD_ROWS)
        assert result.returncode == 0, result.stderr
        assert "Imported 3 legacy account(s)" in result.stdout
    assert accounts(bot) == {"acme": "Legacy", "uat": "Legacy", "emea": "Legacy"}
    # A corrected file updates the Legacy rows it names.
    fixed = import_legacy(tmp_path, database_url, "T0001,uat,Sandbox,new-uat@acme.example.uat")
    assert fixed.returncode == 0, fixed.stderr
    assert "new-uat@acme.example.uat (Sandbox)" in text_of(status(slack_client, "uat"))
    assert len(accounts(bot)) == 3


def test_a_file_that_is_not_utf8_is_refused_with_a_message(tmp_path):
    (tmp_path / "latin1.csv").write_bytes(
        b"team_id,account_id,environment,api_username\nT0001,acme,production,j\xe9r\xf4me@a.example\n"
    )
    result = cli(tmp_path, f"sqlite:///{tmp_path / 'vcc.db'}", "import-legacy", "latin1.csv")
    assert result.returncode == 1
    assert "latin1.csv" in result.stderr and "not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bom_and_any_line_endings_still_import(tmp_path, database_url, bot):
    body = f"{HEADER}\r\n{GOOD_ROWS[0]}\r{GOOD_ROWS[1]}\n{GOOD_ROWS[2]}"
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + body.encode())
    result = cli(tmp_path, database_url, "import-legacy", "excel.csv")
    assert result.returncode == 0, result.stderr
    assert accounts(bot) == {"acme": "Legacy", "uat": "Legacy", "emea": "Legacy"}


def test_a_file_over_the_size_cap_is_refused_before_parsing(tmp_path):
    bad_line = b"not,a,legacy,row,at,all\n"  # parsed, every line would be a problem
    (tmp_path / "huge.csv").write_bytes(bad_line * (LEGACY_MAX_BYTES // len(bad_line) + 1))
    assert (tmp_path / "huge.csv").stat().st_size > LEGACY_MAX_BYTES
    result = cli(tmp_path, f"sqlite:///{tmp_path / 'vcc.db'}", "import-legacy", "huge.csv")
    assert result.returncode == 1
    assert "huge.csv" in result.stderr and "larger than 10 MB" in result.stderr
    assert "line " not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_an_endless_file_is_cut_off_at_the_size_cap(tmp_path):
    # A device has no size to check first: only a bounded read, line by line, stops it.
    # The address-space limit makes reading it whole fail here, not in the OOM killer.
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 * 1024 * 1024,) * 2)

    result = subprocess.run(
        [str(VCC_BOT), "import-legacy", "/dev/zero"],
        env=bare_env(DATABASE_URL=f"sqlite:///{tmp_path / 'vcc.db'}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory,
    )
    assert result.returncode == 1
    assert "/dev/zero" in result.stderr and "larger than 10 MB" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_nul_byte_is_a_problem_on_its_line(tmp_path, database_url, bot):
    # Stored as is on SQLite; refused by PostgreSQL mid-transaction.
    result = import_legacy(
        tmp_path, database_url, HEADER, GOOD_ROWS[0], "T0001,nul,production,vcc\x00@acme.example"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    problems = [p for p in map(str.strip, result.stderr.splitlines()) if p.startswith("line ")]
    assert len(problems) == 1 and problems[0].startswith("line 3:")
    assert "U+0000" in problems[0] and "API username" in problems[0]
    assert accounts(bot) == {}
    assert event_kinds(bot) == []


def test_other_control_characters_are_problems_on_their_lines(tmp_path, database_url, bot):
    result = import_legacy(
        tmp_path,
        database_url,
        HEADER,
        GOOD_ROWS[0],  # line 2
        "T0001,esc\x1b,production,esc-api@acme.example",  # line 3: C0
        "T0001,csi,sandbox,csi\x9b31m@acme.example.uat",  # line 4: C1
        "T0001,del,sandbox,del\x7f@acme.example.uat",  # line 5: DEL
        "T0001,tab,production\t,tab-api@acme.example",  # line 6
        '"T0001","newline","production","a@acme.example\n"',  # line 8: quoted, two lines
        GOOD_ROWS[1],  # line 9
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    problems = [p for p in map(str.strip, result.stderr.splitlines()) if p.startswith("line ")]
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in (3, 4, 5, 6, 8)]
    assert "U+001B" in problems[0] and "account id" in problems[0]
    assert "U+009B" in problems[1] and "API username" in problems[1]
    assert "U+007F" in problems[2]
    assert "U+0009" in problems[3] and "environment" in problems[3]
    assert "U+000A" in problems[4]
    assert accounts(bot) == {}
    assert event_kinds(bot) == []


def test_a_field_over_the_csv_limit_is_a_problem_on_its_line(tmp_path, database_url, bot):
    result = import_legacy(
        tmp_path,
        database_url,
        HEADER,
        GOOD_ROWS[0],  # line 2
        f"T0001,big,production,{'x' * 200_000}@acme.example",  # line 3
        GOOD_ROWS[1],  # line 4
        "T0001,short,production",  # line 5: still read after the big field
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    problems = [p for p in map(str.strip, result.stderr.splitlines()) if p.startswith("line ")]
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 5"]
    assert "field larger than field limit" in problems[0]
    assert len(result.stderr) < 2_000  # the field itself is not echoed
    assert accounts(bot) == {}


def test_many_bad_rows_report_the_first_20_and_a_count(tmp_path):
    bad = [f"T0001,acct{n},staging,a@acme.example" for n in range(5_000)]
    result = import_legacy(tmp_path, f"sqlite:///{tmp_path / 'vcc.db'}", HEADER, *bad)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line.strip() for line in result.stderr.splitlines()]
    start = next(n for n, line in enumerate(lines) if "Nothing was imported" in line)
    report = lines[start + 1 :]  # after the header: the problems, then the count
    assert [p.split(":")[0] for p in report[:20]] == [f"line {n}" for n in range(2, 22)]
    assert report[20:] == ["… and 4980 more problems"]


# ---- relinking a legacy account ------------------------------------------------------


def test_relink_offers_the_link_prompt_and_the_flow_makes_it_linked(
    tmp_path, database_url, slack_client, browser, bot, salesforce
):
    assert import_legacy(tmp_path, database_url, HEADER, GOOD_ROWS[0]).returncode == 0
    prompt = slack_client.replies(slack_client.click(ids.RELINK, "acme"))[0]
    assert prompt["replace_original"] is True
    assert "*Legacy*" in text_of(prompt)
    found = buttons(prompt)
    assert {ids.LINK_PRODUCTION, ids.LINK_SANDBOX, ids.LINK_CUSTOM} <= set(found)
    assert [found[a]["text"]["text"] for a in ids.LINK_ENVIRONMENTS] == ["Production", "Sandbox"]
    assert found[ids.LINK_CUSTOM]["text"]["text"] == "Custom domain"
    assert all(b["value"] == "acme" for b in found.values())

    assert link(slack_client, browser, "acme").status_code == 200
    final = status(slack_client, "acme")
    body = text_of(final)
    assert "*Linked*" in body and salesforce.api_user.username in body
    assert "*Legacy*" not in body and "Relink recommended" not in body
    assert ids.RELINK not in buttons(final)
    assert accounts(bot) == {"acme": "Linked"}


def test_a_member_may_not_relink(tmp_path, database_url, slack_client, bot):
    assert import_legacy(tmp_path, database_url, HEADER, GOOD_ROWS[0]).returncode == 0
    reply = slack_client.replies(slack_client.click(ids.RELINK, "acme", user=MEMBER))[0]
    assert reply.get("replace_original") is not True
    assert "Only workspace admins" in text_of(reply) and "link VCC accounts" in text_of(reply)
    assert ids.LINK_PRODUCTION not in buttons(reply)
    assert accounts(bot) == {"acme": "Legacy"}


# ---- history ---------------------------------------------------------------------------


def test_history_lists_the_newest_ten_events_with_who_and_why(
    slack_client, browser, bot, salesforce
):
    for _ in range(4):  # four abandoned login links: the oldest event falls off the list
        start_link(slack_client, "acme")
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.api_user.permissions["PermissionsEditTask"] = False
    assert link(slack_client, browser, "acme").status_code == 400  # refused
    salesforce.api_user.permissions["PermissionsEditTask"] = True
    salesforce.production.authorize_error = "access_denied"
    assert link(slack_client, browser, "acme").status_code == 400  # cancelled
    salesforce.production.authorize_error = None
    unlink(slack_client)
    assert len(event_kinds(bot)) == 11

    reply = history(slack_client)
    assert "(newest first)" in text_of(reply)
    lines = history_lines(reply)
    assert labels(lines) == [
        "Unlinked",
        "Link cancelled",
        "Link started",
        "Link refused",
        "Link started",
        "Linked",
        *["Link started"] * 4,
    ]
    assert all(f"by <@{ADMIN}>" in line for line in lines)
    assert "Edit Tasks" in lines[3]
    assert salesforce.api_user.username in lines[5]

    recent = recent_history(status(slack_client, "acme"))
    assert labels(recent) == ["Unlinked", "Link cancelled", "Link started"]


def test_a_member_may_not_see_history(slack_client, browser, bot):
    assert link(slack_client, browser, "acme").status_code == 200
    reply = history(slack_client, user=MEMBER)
    assert "Only workspace admins" in text_of(reply)
    assert "see the history of VCC accounts" in text_of(reply)
    assert history_lines(reply) == []


def test_broken_and_recovered_are_recorded_and_announced_once(
    slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.production.revoke_user_tokens(salesforce.api_user)
    assert "Broken" in text_of(status(slack_client, "acme"))
    broken = history_lines(history(slack_client))
    assert labels(broken)[0] == "Found broken" and "invalid_grant" in broken[0]

    assert link(slack_client, browser, "acme").status_code == 200
    assert "the link works" in text_of(status(slack_client, "acme"))
    lines = history_lines(history(slack_client))
    assert labels(lines) == [
        "Recovered",
        "Linked",
        "Link started",
        "Found broken",
        "Linked",
        "Link started",
    ]
    assert "relinked" in lines[0]
    slack.wait_for(lambda: notices(slack, "works again"))
    assert len(notices(slack, "is broken")) == 1
    assert len(notices(slack, "works again")) == 1


# ---- audit export ----------------------------------------------------------------------


def test_audit_exports_json_and_csv_filtered_by_account(
    tmp_path, database_url, slack_client, browser, bot, salesforce
):
    assert link(slack_client, browser, "acme").status_code == 200
    start_link(slack_client, "beta")
    unlink(slack_client)

    records = json.loads(audit(tmp_path, database_url, "--format", "json"))
    assert [(r["account_id"], r["event"]) for r in records] == [
        ("acme", "link_started"),
        ("acme", "link_completed"),
        ("beta", "link_started"),
        ("acme", "unlinked"),
    ]
    for record in records:
        assert list(record) == AUDIT_COLUMNS
        assert record["team_id"] == "T0001" and record["actor"] == ADMIN
        assert datetime.fromisoformat(record["created_at"]).tzinfo is not None
    completed = records[1]
    assert completed["org_id"] == salesforce.api_user.org_id
    assert completed["sf_username"] == salesforce.api_user.username

    acme = json.loads(audit(tmp_path, database_url, "--account", "acme", "--format", "json"))
    assert [r["id"] for r in acme] == [r["id"] for r in records if r["account_id"] == "acme"]
    assert json.loads(audit(tmp_path, database_url, "--account", "other", "--format", "json")) == []

    rows = list(csv.reader(io.StringIO(audit(tmp_path, database_url, "--format", "csv"))))
    assert rows[0] == AUDIT_COLUMNS
    assert [int(row[0]) for row in rows[1:]] == [r["id"] for r in records]
    assert rows[2][AUDIT_COLUMNS.index("sf_username")] == salesforce.api_user.username


def test_audit_csv_escapes_cells_a_spreadsheet_would_run_as_formulas(tmp_path, database_url):
    formula = '=HYPERLINK("https://evil.example","x")@acme.example'
    row = io.StringIO()
    csv.writer(row).writerow(["T0001", "-2-3", "production", formula])
    result = import_legacy(tmp_path, database_url, row.getvalue().strip())
    assert result.returncode == 0, result.stderr
    # What Salesforce said lands in `detail`: anything may start a cell there.
    details = ["+1+cmd|' /C calc'!A0", "@SUM(1+1)", "\t=1+1", "\r=1+1", "-1", "fine = ok"]
    db = Database(create_db_engine(database_url))
    try:
        with db.transaction() as session:
            for detail in details:
                repo.add_event(
                    session,
                    team_id="T0001",
                    account_id="-2-3",
                    event=AuditKind.BROKEN,
                    actor="monitor",
                    now=utcnow(),
                    detail=detail,
                )
    finally:
        db.dispose()

    records = json.loads(audit(tmp_path, database_url, "--format", "json"))
    assert [r["account_id"] for r in records] == ["-2-3"] * 7
    assert records[0]["sf_username"] == formula  # JSON: exactly as stored
    assert [r["detail"] for r in records] == [None, *details]

    rows = list(csv.reader(io.StringIO(audit_exactly(tmp_path, database_url), newline="")))
    assert rows[0] == AUDIT_COLUMNS
    cells = [dict(zip(AUDIT_COLUMNS, r, strict=True)) for r in rows[1:]]
    assert [c["account_id"] for c in cells] == ["'-2-3"] * 7
    assert cells[0]["sf_username"] == "'" + formula
    assert [c["detail"] for c in cells] == [
        "",
        "'+1+cmd|' /C calc'!A0",
        "'@SUM(1+1)",
        "'\t=1+1",
        "'\r=1+1",
        "'-1",
        "fine = ok",
    ]
    # Nothing else changes: ids, times, names as they are.
    assert [int(c["id"]) for c in cells] == [r["id"] for r in records]
    assert [c["created_at"] for c in cells] == [r["created_at"] for r in records]
    assert {c["team_id"] for c in cells} == {"T0001"}
    assert cells[0]["actor"] == "operator" and cells[1]["event"] == "broken"
