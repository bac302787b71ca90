"""Which URLs the bot trusts: https everywhere, plain http only on this machine."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Hosts Salesforce serves instances and identity URLs from (My Domain, instances, Hyperforce,
# Government Cloud, the Alibaba-hosted China instances), per Salesforce's "Allowed domains"
# help page. A token response naming any other host is not trusted.
SALESFORCE_DOMAINS = (
    "salesforce.com",
    "force.com",
    "cloudforce.com",
    "salesforce.mil",
    "sfcrmproducts.cn",
)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_ok(url: str) -> bool:
    """https; plain http only to a loopback host (development, tests)."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname))


def on_salesforce(url: str, login_host: str) -> bool:
    """A URL from a token response: secure, and on Salesforce's domains or the login host."""
    if not transport_ok(url):
        return False
    host = (urlsplit(url).hostname or "").lower()
    if host == (urlsplit(login_host).hostname or "").lower():
        return True
    return any(host == d or host.endswith("." + d) for d in SALESFORCE_DOMAINS)
