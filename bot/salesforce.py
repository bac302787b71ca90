"""Salesforce OAuth 2.0 web-server flow and the few REST calls the bot needs.

authlib drives the OAuth steps (a fresh client per step, holding only data we pass in);
httpx2, which authlib itself uses, makes the REST calls. Every step goes through one
process-wide httpx2 client: one connection pool and one TLS context, whose limits bound
how many calls are under way at once (building a TLS context costs milliseconds of CPU on
the event loop, per client). Every failure raises a SalesforceError subclass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from bot.urls import on_salesforce

API_VERSION = "62.0"
SCOPE = "api refresh_token id"
AUTHORIZE_PATH = "/services/oauth2/authorize"
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a path, not a secret
REVOKE_PATH = "/services/oauth2/revoke"

REQUIRED_PERMISSIONS = {
    "PermissionsApiEnabled": "API Enabled",
    "PermissionsEditTask": "Edit Tasks",
}
RECOMMENDED_PERMISSIONS = {
    "PermissionsApiUserOnly": "API Only User",
    "PermissionsViewAllUsers": "View All Users",
    "PermissionsViewAllData": "View All Data",
    "PermissionsModifyAllData": "Modify All Data",
}
# Salesforce answered, but not in a form the bot understands (HTML, a wrong shape).
UNEXPECTED = "unexpected_answer"
# Errors about the bot's connected app, not about any link: an unknown consumer key
# (invalid_client_id "client identifier invalid", omniphx/forrest#184), a wrong secret
# (invalid_client, restforce#338), a callback URL the app does not list.
CONNECTED_APP_ERRORS = frozenset({"invalid_client_id", "invalid_client", "redirect_uri_mismatch"})
_INVALID_FIELD = re.compile(r"No such column '(\w+)'")
# At most this many Salesforce calls at once per process; more wait up to POOL_WAIT for a
# connection and then fail as "unavailable", so a burst cannot build an unbounded backlog.
MAX_CONNECTIONS = 32
POOL_WAIT = 5.0
MAX_REMEMBERED_VERSIONS = 1000


class SalesforceError(Exception):
    """Base of every Salesforce failure."""


class SalesforceUnavailable(SalesforceError):
    """Salesforce could not be reached, timed out or answered 5xx: nothing is known."""


class SalesforceRejected(SalesforceError):
    """Salesforce answered with an OAuth or REST error."""

    def __init__(self, error: str, description: str | None = None, status: int | None = None):
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description or ""
        self.status = status


class SignatureMismatch(SalesforceError):
    """The token response is not trusted: its signature does not match our app's secret,
    or it points the bot at a host that is not Salesforce's.

    Carries the response's tokens so the caller can revoke them: if they work, they
    must not stay live.
    """

    def __init__(self, tokens: list[str], why: str = "its signature does not match") -> None:
        super().__init__(f"the token response is not trusted: {why}")
        self.tokens = tokens


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    refresh_token: str | None
    instance_url: str
    identity_url: str
    issued_at: str
    scope: str


@dataclass(frozen=True)
class Identity:
    org_id: str
    user_id: str
    username: str
    display_name: str
    active: bool
    user_type: str


@dataclass(frozen=True)
class Permissions:
    granted: dict[str, bool]
    unchecked: frozenset[str]  # fields this org would not let us query

    def missing_required(self) -> list[str]:
        return [
            label
            for field, label in REQUIRED_PERMISSIONS.items()
            if field not in self.unchecked and not self.granted.get(field, False)
        ]

    def missing_recommended(self) -> list[str]:
        return [
            label
            for field, label in RECOMMENDED_PERMISSIONS.items()
            if field not in self.unchecked and not self.granted.get(field, False)
        ]

    def unchecked_labels(self) -> list[str]:
        labels = REQUIRED_PERMISSIONS | RECOMMENDED_PERMISSIONS
        return [labels[f] for f in labels if f in self.unchecked]


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def expected_signature(client_secret: str, identity_url: str, issued_at: str) -> str:
    mac = hmac.new(client_secret.encode(), (identity_url + issued_at).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def _ids_from_identity_url(identity_url: str) -> tuple[str, str]:
    parts = urlsplit(identity_url).path.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "id":
        raise SalesforceRejected(UNEXPECTED, "the identity URL has an unexpected form")
    return parts[-2], parts[-1]


class _ThroughSharedClient(httpx2.AsyncBaseTransport):
    """Lets a per-step authlib client send through the shared client, and never close it."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._client.send(request, stream=True)

    async def aclose(self) -> None:
        pass  # the shared client is closed once, at shutdown


class SalesforceClient:
    """Talks to Salesforce for one connected app (client id and secret).

    Call `aclose()` at shutdown: it closes the shared connection pool.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._timeout = timeout
        limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout, pool=POOL_WAIT),
            limits=limits,
            transport=transport,
        )
        self._shared = _ThroughSharedClient(self._http)
        # The API version an instance serves, where it does not serve API_VERSION.
        self._versions: dict[str, str] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    @asynccontextmanager
    async def _oauth(self) -> AsyncIterator[AsyncOAuth2Client]:
        async with AsyncOAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
            revocation_endpoint_auth_method="none",
            redirect_uri=self._redirect_uri,
            scope=SCOPE,
            code_challenge_method="S256",
            timeout=self._timeout,
            transport=self._shared,
        ) as client:
            try:
                yield client
            except OAuthError as exc:
                raise SalesforceRejected(exc.error, exc.description) from None
            except httpx2.HTTPStatusError as exc:
                raise SalesforceUnavailable(
                    f"Salesforce answered HTTP {exc.response.status_code}"
                ) from None
            except httpx2.HTTPError as exc:
                raise SalesforceUnavailable(f"Salesforce could not be reached ({exc})") from None
            except ValueError:  # a 200 that is not JSON (an HTML error page, a proxy's page)
                raise SalesforceRejected(UNEXPECTED, "the token endpoint's answer") from None

    def authorize_url(self, login_host: str, *, state: str, code_verifier: str) -> str:
        # Only builds a URL; the shared transport spares building an SSL context (85 ms
        # of CPU on the event loop) for a client that never sends a request.
        client = AsyncOAuth2Client(
            client_id=self._client_id,
            redirect_uri=self._redirect_uri,
            scope=SCOPE,
            code_challenge_method="S256",
            transport=self._shared,
        )
        url, _ = client.create_authorization_url(
            login_host + AUTHORIZE_PATH,
            state=state,
            code_verifier=code_verifier,
            prompt="login",
        )
        return url

    def _grant(
        self, token: dict[str, object], *, login_host: str, fallback_refresh: str | None
    ) -> TokenGrant:
        try:
            identity_url = str(token["id"])
            issued_at = str(token["issued_at"])
            access_token = str(token["access_token"])
            instance_url = str(token["instance_url"]).rstrip("/")
        except KeyError as missing:
            raise SalesforceRejected(UNEXPECTED, f"token response lacks {missing}") from None
        signature = str(token.get("signature", ""))
        wanted = expected_signature(self._client_secret, identity_url, issued_at)
        tokens = [str(token[k]) for k in ("refresh_token", "access_token") if token.get(k)]
        if not hmac.compare_digest(signature.encode(), wanted.encode()):
            raise SignatureMismatch(tokens)
        # The signature covers id and issued_at only: instance_url could be rewritten on
        # the way, and the access token would then be sent there. Trust neither blindly.
        for name, url in (("instance_url", instance_url), ("id", identity_url)):
            if not on_salesforce(url, login_host):
                raise SignatureMismatch(tokens, f"{name} is not on a Salesforce domain")
        refresh = token.get("refresh_token")
        return TokenGrant(
            access_token=access_token,
            refresh_token=str(refresh) if refresh else fallback_refresh,
            instance_url=instance_url,
            identity_url=identity_url,
            issued_at=issued_at,
            scope=str(token.get("scope", "")),
        )

    async def exchange_code(self, login_host: str, *, code: str, code_verifier: str) -> TokenGrant:
        async with self._oauth() as client:
            token = await client.fetch_token(
                login_host + TOKEN_PATH,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
            )
        return self._grant(token, login_host=login_host, fallback_refresh=None)

    async def refresh(self, login_host: str, refresh_token: str) -> TokenGrant:
        async with self._oauth() as client:
            token = await client.refresh_token(login_host + TOKEN_PATH, refresh_token=refresh_token)
        # Without refresh-token rotation Salesforce sends no new one: keep the old.
        return self._grant(token, login_host=login_host, fallback_refresh=refresh_token)

    async def revoke(self, login_host: str, token: str) -> None:
        """Revoke a token; an already revoked one counts as success.

        Salesforce answers 200, or 400 with invalid_token or unsupported_token_type
        (Mobile SDK Developer Guide, "Revoking OAuth Tokens"). invalid_token: the token is
        dead already. Any other OAuth error is final, SalesforceRejected: asking again
        gets the same answer. A 5xx, or a 4xx that is no OAuth answer (a proxy's page, a
        429), says nothing about the token: SalesforceUnavailable, try later.
        """
        async with self._oauth() as client:
            response = await client.revoke_token(login_host + REVOKE_PATH, token=token)
        status = response.status_code
        if status == 200:
            return
        error = _oauth_error(response) if 400 <= status < 500 else None
        if error is None:
            raise SalesforceUnavailable(f"Salesforce answered HTTP {status} to a revoke")
        if error == "invalid_token":
            return
        raise SalesforceRejected(error, status=status)

    async def _get(self, url: str, access_token: str, **params: str) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        try:
            response = await self._http.get(url, params=params, headers=headers)
        except httpx2.HTTPError as exc:
            raise SalesforceUnavailable(f"Salesforce could not be reached ({exc})") from None
        if response.status_code >= 500:
            raise SalesforceUnavailable(f"Salesforce answered HTTP {response.status_code}")
        return response

    async def identity(self, grant: TokenGrant) -> Identity:
        response = await self._get(grant.identity_url, grant.access_token)
        if response.status_code != 200:
            raise SalesforceRejected(
                "identity_refused", response.text[:200], status=response.status_code
            )
        data = _json_object(response)
        org_id, user_id = _ids_from_identity_url(grant.identity_url)
        if data.get("organization_id") != org_id or data.get("user_id") != user_id:
            raise SalesforceRejected(UNEXPECTED, "identity does not match the token")
        return Identity(
            org_id=org_id,
            user_id=user_id,
            username=str(data.get("username", "")),
            display_name=str(data.get("display_name", "")),
            active=bool(data.get("active", True)),
            user_type=str(data.get("user_type", "")),
        )

    async def permissions(self, grant: TokenGrant) -> Permissions:
        """Read the user's effective permissions; fields the org rejects are left unchecked.

        Asked at API_VERSION, or, where the org does not serve it (404 NOT_FOUND), at the
        version `_served_version` finds.
        """
        fields = [*REQUIRED_PERMISSIONS, *RECOMMENDED_PERMISSIONS]
        unchecked: set[str] = set()
        version = self._versions.get(grant.instance_url, API_VERSION)
        asked_versions = False
        while fields:
            url = f"{grant.instance_url}/services/data/v{version}/query"
            # Field names come from our own constants, never from input.
            soql = f"SELECT {', '.join(fields)} FROM UserPermissionAccess"  # noqa: S608
            response = await self._get(url, grant.access_token, q=soql)
            if response.status_code == 200:
                records = _json_object(response).get("records") or [{}]
                row = records[0] if isinstance(records, list) and records else {}
                if not isinstance(row, dict):
                    raise SalesforceRejected(UNEXPECTED, "the permission query's rows")
                return Permissions(
                    granted={f: bool(row.get(f)) for f in fields}, unchecked=frozenset(unchecked)
                )
            code, message = _rest_error(response)
            if response.status_code == 404 and code == "NOT_FOUND" and not asked_versions:
                asked_versions = True
                version = await self._served_version(grant.instance_url)
                continue
            bad = _INVALID_FIELD.search(message) if code == "INVALID_FIELD" else None
            if bad is None or bad.group(1) not in fields:
                raise SalesforceRejected(code, message, status=response.status_code)
            fields.remove(bad.group(1))
            unchecked.add(bad.group(1))
        return Permissions(granted={}, unchecked=frozenset(unchecked))

    async def _served_version(self, instance_url: str) -> str:
        """The API version to ask an org that does not serve ours: the newest it lists that
        is not newer than ours (else its oldest), remembered per instance.

        The Versions resource, GET /services/data/, needs no authentication (REST API
        Developer Guide, "Versions").
        """
        response = await self._get(f"{instance_url}/services/data/", "")
        try:
            listed = response.json() if response.status_code == 200 else None
            served = sorted(
                (tuple(int(n) for n in str(v["version"]).split(".")), str(v["version"]))
                for v in listed or []
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            served = []
        if not served:
            raise SalesforceRejected(UNEXPECTED, "the org's list of API versions")
        ours = tuple(int(n) for n in API_VERSION.split("."))
        older = [version for number, version in served if number <= ours]
        chosen = older[-1] if older else served[0][1]
        if len(self._versions) >= MAX_REMEMBERED_VERSIONS:
            self._versions.clear()  # bounded: a few orgs need it, and asking is cheap
        self._versions[instance_url] = chosen
        return chosen


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    """The JSON object Salesforce documents; an HTML page or another shape is unexpected."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SalesforceRejected(UNEXPECTED, f"not a JSON object (HTTP {response.status_code})")
    return data


def _oauth_error(response: httpx2.Response) -> str | None:
    """The OAuth error code of an answer, or None when it is no OAuth error answer."""
    try:
        data = response.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return str(error) if isinstance(error, str) and error else None


def _rest_error(response: httpx2.Response) -> tuple[str, str]:
    try:
        body = response.json()
        first = body[0] if isinstance(body, list) and body else body
        return str(first.get("errorCode", "UNKNOWN")), str(first.get("message", ""))
    except (ValueError, AttributeError):
        return f"HTTP_{response.status_code}", response.text[:200]
