"""`/vcc doctor` and `vcc-bot doctor`: check the configuration, and say what to fix.

Every check ends in one Finding: passed, or a problem and what to do about it, in plain
words (an admin reads this twice a year). The slow checks run at once, each within
`timeout` seconds, so a host that does not answer is named as such and never holds the
report longer than that:

    PUBLIC_URL            https (or http on this machine), and GET /healthz answers
    Callback URL          the redirect_uri the bot sends is PUBLIC_URL/salesforce/callback
    Login host ...        each Salesforce login host answers its token endpoint
    Connected app at ...  a made-up authorization code tells whether Salesforce knows the
                          consumer key, the secret and the callback URL
    Database, keys        the database answers; one stored token decrypts
    Notification channel  the bot can post there (Slack's conversations.info, read only)
    API user ...          how many of its five approvals the bot's own links hold

No Slack or web-framework code here: the Slack edge hands in a `ChannelLookup`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx2
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import MAX_ACCOUNTS_PER_API_USER, DoctorReport, Environment, Finding, LinkStatus
from bot.salesforce import (
    SalesforceClient,
    SalesforceError,
    SalesforceRejected,
    SalesforceUnavailable,
)
from bot.urls import is_loopback
from storage import repository as repo
from storage.db import Database, StorageUnavailable
from storage.models import VccAccount

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds each slow check may take. Salesforce's token endpoint and Slack answer in well
# under one; /healthz waits up to 5 for the database, which is itself a finding by then.
TIMEOUT = 4.0
# Not a code Salesforce ever issued: exchanging it changes nothing at Salesforce, and the
# error it earns says whether the connected app's key, secret and callback are known.
PROBE_CODE = "vcc-bot-doctor-probe-not-a-code"
PROBE_VERIFIER = "vcc-bot-doctor-probe-verifier-" + "0" * 20  # 43+ characters, as PKCE wants
# Slack's conversations.info is Tier 3 (about 50 a minute): a few lookups at a time.
CHANNEL_LOOKUPS = 4
NOT_INSTALLED = "app_not_installed"  # what the Slack edge answers for a workspace without the app
CHECKED_ENVIRONMENTS = (Environment.PRODUCTION, Environment.SANDBOX)


@dataclass(frozen=True)
class ChannelInfo:
    """What Slack's conversations.info says of a channel, or the error it answered."""

    error: str | None = None  # e.g. channel_not_found, missing_scope, app_not_installed
    is_member: bool = False
    is_private: bool = False
    is_archived: bool = False


# (team id, enterprise id, channel id) -> what Slack says of the channel; from the edge.
ChannelLookup = Callable[[str, str | None, str], Awaitable[ChannelInfo]]


@dataclass
class _Stored:
    """What the database holds for the report: the accounts, and each API user's links."""

    accounts: list[VccAccount]
    links_per_user: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def linked(self) -> list[VccAccount]:
        return [a for a in self.accounts if a.status == LinkStatus.LINKED]


class Doctor:
    """Runs every check at once and returns one report; never raises for a failed check."""

    def __init__(
        self,
        *,
        public_url: str,
        login_hosts: dict[Environment, str],
        salesforce: SalesforceClient,
        db: Database,
        cipher: TokenCipher,
        channels: ChannelLookup,
        timeout: float = TIMEOUT,
    ) -> None:
        self._public_url = public_url
        self._hosts = login_hosts
        self._sf = salesforce
        self._db = db
        self._cipher = cipher
        self._channels = channels
        self._timeout = timeout

    @property
    def callback_url(self) -> str:
        return f"{self._public_url}/salesforce/callback"

    async def run(self, team_id: str | None = None) -> DoctorReport:
        """Every check; of one workspace's accounts, or (None) of every workspace's."""
        parts = await asyncio.gather(
            self._public(),
            *(self._login_host(env) for env in CHECKED_ENVIRONMENTS if env in self._hosts),
            self._stored_checks(team_id),
        )
        findings = [*parts[0], self._callback(), *(f for part in parts[1:] for f in part)]
        report = DoctorReport(findings, team_id)
        log.info("doctor (%s): %d problem(s)", team_id or "every workspace", len(report.problems))
        return report

    async def _within(self, work: Awaitable[T]) -> T:
        return await asyncio.wait_for(work, self._timeout)

    def _late(self) -> str:
        return f"did not answer within {self._timeout:g} seconds"

    # ---- the bot's own address ---------------------------------------------------------------

    async def _public(self) -> list[Finding]:
        check, url = "PUBLIC_URL", self._public_url
        parts = urlsplit(url)
        if parts.scheme != "https" and not is_loopback(parts.hostname):
            return [
                Finding(
                    check,
                    False,
                    f"{url} is not https.",
                    "Use an https address: Slack and browsers only reach the bot over https.",
                )
            ]
        health = f"{url}/healthz"
        unreachable = (
            "Run `vcc-bot serve`, and make PUBLIC_URL the address Slack and browsers use to "
            "reach it (its DNS name, the proxy or load balancer in front, its TLS certificate)."
        )
        try:
            # A client of its own, twice a year: its TLS context costs a few milliseconds.
            async with httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
                response = await self._within(http.get(health))
        except (TimeoutError, httpx2.TimeoutException):
            return [Finding(check, False, f"{health} {self._late()}.", unreachable)]
        except httpx2.HTTPError as exc:
            reason = type(exc).__name__
            return [Finding(check, False, f"Nothing answered at {health} ({reason}).", unreachable)]
        answer = _json_object(response)
        if response.status_code == 200 and answer.get("ok") is True:
            local = "" if parts.scheme == "https" else " (plain http: for this machine only)"
            return [Finding(check, True, f"{url} answers: GET /healthz said ok{local}.")]
        if response.status_code == 503 and "database" in answer:
            return [
                Finding(
                    check,
                    False,
                    f"{health} answers 503: the bot there is not ready (its database, or Slack's "
                    "auth.test, has not answered).",
                    "See the database line below and the bot's log.",
                )
            ]
        return [
            Finding(
                check,
                False,
                f"{health} answered HTTP {response.status_code}, not as vcc-bot answers.",
                "Make PUBLIC_URL the address of vcc-bot itself, and check what the proxy in "
                "front of it forwards.",
            )
        ]

    def _callback(self) -> Finding:
        """The redirect_uri the bot sends Salesforce, read from a real authorize URL."""
        host = next(iter(self._hosts.values()), "https://login.salesforce.com")
        url = self._sf.authorize_url(host, state="doctor", code_verifier=PROBE_VERIFIER)
        sent = parse_qs(urlsplit(url).query).get("redirect_uri", [""])[0]
        if sent != self.callback_url:
            return Finding(
                "Callback URL",
                False,
                f"The bot sends Salesforce {sent or 'no callback URL'}, not {self.callback_url}.",
                "Restart the bot with the PUBLIC_URL it is reached at.",
            )
        return Finding(
            "Callback URL",
            True,
            f"The bot sends {sent}: the connected app's Callback URL must be exactly this.",
        )

    # ---- Salesforce: each login host and the connected app -----------------------------------

    async def _login_host(self, environment: Environment) -> list[Finding]:
        """One POST to the token endpoint, with a code Salesforce never issued.

        Salesforce authenticates the client first: an unknown consumer key answers
        invalid_client_id, a wrong secret invalid_client (jsforce#762, restforce#338), a
        callback URL that is not the app's redirect_uri_mismatch; only a client it knows
        gets as far as the code, invalid_grant. Nothing changes at Salesforce.
        """
        label, host = environment.label, self._hosts[environment]
        where, app = f"Login host {label}", f"Connected app at {label}"
        variable = f"SALESFORCE_{environment.name}_URL"
        not_checked = Finding(app, False, f"Not checked: the {label} login host did not answer.")
        try:
            await self._within(
                self._sf.exchange_code(host, code=PROBE_CODE, code_verifier=PROBE_VERIFIER)
            )
        except TimeoutError:
            fix = f"Check {variable} and that this machine may reach it (firewall, proxy)."
            return [Finding(where, False, f"{host} {self._late()}.", fix), not_checked]
        except SalesforceUnavailable as exc:
            fix = f"Check {variable} and that this machine may reach it (firewall, proxy, DNS)."
            return [Finding(where, False, f"{host}: {exc}.", fix), not_checked]
        except SalesforceRejected as exc:
            return [Finding(where, True, f"{host} answers."), self._app(environment, exc)]
        except SalesforceError as exc:  # a token answer at all, with a made-up code: not Salesforce
            return [self._not_salesforce(where, host, variable, str(exc)), not_checked]
        return [self._not_salesforce(where, host, variable, "it accepted a made-up code")]

    @staticmethod
    def _not_salesforce(where: str, host: str, variable: str, why: str) -> Finding:
        return Finding(
            where,
            False,
            f"{host} answered, but not as Salesforce's token endpoint does ({why}).",
            f"Make {variable} a Salesforce login host (https://login.salesforce.com, "
            "https://test.salesforce.com, or your org's My Domain).",
        )

    def _app(self, environment: Environment, refused: SalesforceRejected) -> Finding:
        label = environment.label
        check = f"Connected app at {label}"
        deployed = (
            " If only this login host says so, the connected app is not available in the "
            "sandbox: deploy it there (or refresh the sandbox)."
            if environment == Environment.SANDBOX
            else ""
        )
        match refused.error:
            case "invalid_grant":
                known = "Salesforce knows the consumer key, the secret and the callback URL."
                return Finding(check, True, known)
            case "invalid_client_id":
                return Finding(
                    check,
                    False,
                    "Salesforce does not know the consumer key (invalid_client_id: client "
                    "identifier invalid).",
                    "In Salesforce Setup → App Manager → the connected app → View → Manage "
                    "Consumer Details, copy the Consumer Key into SALESFORCE_CLIENT_ID and "
                    f"restart the bot.{deployed}",
                )
            case "invalid_client":
                return Finding(
                    check,
                    False,
                    "Salesforce knows the consumer key, but not with this secret "
                    "(invalid_client: invalid client credentials).",
                    "Copy the connected app's Consumer Secret (App Manager → View → Manage "
                    "Consumer Details) into SALESFORCE_CLIENT_SECRET and restart the bot.",
                )
            case "redirect_uri_mismatch":
                return Finding(
                    check,
                    False,
                    f"Salesforce says {self.callback_url} is not the connected app's callback "
                    "URL (redirect_uri_mismatch).",
                    "In Salesforce Setup → App Manager → the connected app → Edit, set Callback "
                    f"URL to exactly {self.callback_url} (Salesforce may take a few minutes to "
                    "apply it).",
                )
        description = f": {refused.description}" if refused.description else ""
        return Finding(
            check,
            False,
            f"Salesforce answered {refused.error}{description}, which does not say whether "
            "it knows the connected app.",
            "Check the connected app in Salesforce Setup (OAuth settings enabled, not "
            "blocked), then run the doctor again.",
        )

    # ---- the database and what it holds -------------------------------------------------------

    async def _stored_checks(self, team_id: str | None) -> list[Finding]:
        unread = "Not checked: the database did not answer."
        try:
            stored = await self._within(self._db.read(partial(_read, team_id=team_id)))
        except TimeoutError:
            problem = f"The database {self._late()}."
        except StorageUnavailable as exc:
            problem = f"The database did not answer ({exc})."
        except SQLAlchemyError as exc:  # e.g. a table missing: migrations not applied
            problem = f"The database answered with an error ({type(exc).__name__})."
        else:
            return [
                Finding("Database", True, "The database answers."),
                self._keys(stored),
                *await self._channel_checks(stored),
                *self._api_users(stored),
            ]
        return [
            Finding(
                "Database",
                False,
                problem,
                "Check DATABASE_URL and that the database server runs and accepts the bot; "
                "then `vcc-bot db upgrade`.",
            ),
            Finding("Encryption keys", False, unread),
            Finding("Notification channels", False, unread),
            Finding("API users", False, unread),
        ]

    def _keys(self, stored: _Stored) -> Finding:
        check = "Encryption keys"
        sample = next((a for a in stored.accounts if a.refresh_token_encrypted), None)
        if sample is None or sample.refresh_token_encrypted is None:
            return Finding(check, True, "No stored token to try yet; VCC_ENCRYPTION_KEY is valid.")
        try:
            self._cipher.decrypt(sample.refresh_token_encrypted)  # the token itself is dropped
        except UndecryptableToken:
            return Finding(
                check,
                False,
                f"No key in VCC_ENCRYPTION_KEY decrypts the stored token of VCC account "
                f"{sample.account_id}.",
                "Put back the key it was encrypted with (keys after the first only decrypt), "
                "or relink the account; `vcc-bot rotate-key` lists every such account.",
            )
        return Finding(
            check, True, f"The stored token of VCC account {sample.account_id} decrypts."
        )

    async def _channel_checks(self, stored: _Stored) -> list[Finding]:
        """Each notification channel of the linked accounts, a few lookups at a time."""
        by_channel: dict[tuple[str, str | None, str], list[str]] = {}
        for account in stored.linked:
            if account.notify_channel:
                key = (account.team_id, account.enterprise_id, account.notify_channel)
                by_channel.setdefault(key, []).append(account.account_id)
        if not by_channel:
            return [Finding("Notification channels", True, "No linked account posts notices yet.")]
        gate = asyncio.Semaphore(CHANNEL_LOOKUPS)

        async def one(key: tuple[str, str | None, str], accounts: list[str]) -> Finding:
            async with gate:  # each lookup's bound starts once it is its turn
                try:
                    info = await self._within(self._channels(*key))
                except TimeoutError:
                    info = None
                except Exception as exc:  # the lookup failed on our side: say so, go on
                    log.exception("the doctor could not look up channel %s", key[2])
                    info = ChannelInfo(error=type(exc).__name__)
            return self._channel(key[0], key[2], accounts, info)

        return list(await asyncio.gather(*(one(k, a) for k, a in sorted(by_channel.items()))))

    def _channel(
        self, team_id: str, channel: str, accounts: list[str], info: ChannelInfo | None
    ) -> Finding:
        check = "Notification channel"
        whose = f"Notices of VCC account{'s' if len(accounts) > 1 else ''} {', '.join(accounts)}"
        move = (
            "Invite me there with `/invite @VCC`, or run `/vcc channel ACCOUNT` in a channel "
            "I am in to post the notices there."
        )

        def problem(detail: str, fix: str) -> Finding:
            return Finding(check, False, f"{whose} go here. {detail}", fix, channel)

        if info is None:
            return problem(f"Slack {self._late()} about this channel.", "Run the doctor again.")
        if info.error == "channel_not_found":
            return problem(
                "I cannot see this channel: it was deleted, or it is private and I am not in it.",
                move,
            )
        if info.error == "missing_scope":
            return problem(
                "I could not check it: the app was installed before it asked for the "
                "channels:read and groups:read scopes.",
                "Reinstall the app to the workspace (api.slack.com/apps → the app → Install "
                "App → Reinstall; with many workspaces, PUBLIC_URL/slack/install).",
            )
        if info.error == NOT_INSTALLED:
            return problem(
                f"The app is not installed in workspace {team_id} any more.",
                "Install it again from PUBLIC_URL/slack/install.",
            )
        if info.error:
            return problem(f"Slack answered {info.error} about this channel.", move)
        if info.is_archived:
            return problem(
                "The channel is archived.",
                "Unarchive it, or run `/vcc channel ACCOUNT` in another channel I am in.",
            )
        if info.is_member:
            return Finding(check, True, f"{whose} go here; I am a member.", channel=channel)
        if not info.is_private:
            return Finding(
                check,
                True,
                f"{whose} go here; it is public, so I post without being a member "
                "(chat:write.public).",
                channel=channel,
            )
        return problem("It is private and I am not in it.", move)

    @staticmethod
    def _api_users(stored: _Stored) -> list[Finding]:
        """How many of each API user's five approvals the bot's links hold (in every
        workspace: Salesforce counts them all), naming only the accounts reported on."""
        named: dict[tuple[str, str], list[VccAccount]] = {}
        for account in stored.linked:
            if account.org_id and account.sf_user_id:
                named.setdefault((account.org_id, account.sf_user_id), []).append(account)
        if not named:
            return [Finding("API users", True, "No API user is linked yet.")]
        findings = []
        for key, accounts in sorted(named.items()):
            count = stored.links_per_user.get(key, len(accounts))
            username = accounts[0].sf_username or key[1]
            full = count >= MAX_ACCOUNTS_PER_API_USER
            note = (
                " Full: a further VCC account needs another API user (a sixth approval would "
                "revoke this user's oldest)."
                if full
                else ""
            )
            names = ", ".join(a.account_id for a in accounts)
            findings.append(
                Finding(
                    f"API user {username}",
                    True,
                    f"{count} of {MAX_ACCOUNTS_PER_API_USER} approvals in use (org {key[0]}; "
                    f"VCC accounts {names}).{note}",
                )
            )
        return findings


def _read(session: Session, *, team_id: str | None) -> _Stored:
    accounts = repo.workspace_accounts(session, team_id=team_id)
    stored = _Stored(accounts)
    for account in stored.linked:
        if account.org_id and account.sf_user_id:
            key = (account.org_id, account.sf_user_id)
            if key not in stored.links_per_user:
                stored.links_per_user[key] = repo.count_api_user_links(
                    session, org_id=key[0], sf_user_id=key[1]
                )
    return stored


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def render_text(report: DoctorReport) -> str:
    """The report for a terminal: one line per check, its fix indented below."""
    scope = f"workspace {report.team_id}" if report.team_id else "every workspace"
    count = len(report.problems)
    verdict = "everything passed" if not count else f"{count} problem{'s' if count > 1 else ''}"
    lines = [f"vcc-bot doctor ({scope}): {verdict}"]
    for finding in report.findings:
        mark = "ok     " if finding.passed else "PROBLEM"
        lines.append(f"{mark}  {finding.title}: {finding.detail}")
        if finding.fix and not finding.passed:
            lines.append(f"         Fix: {finding.fix}")
    return "\n".join(lines)
