"""The two fake Salesforce orgs a test runs against, with their API users."""

from __future__ import annotations

from dataclasses import dataclass

from tests.fakes import FakeSalesforce, SfUser


@dataclass
class Salesforce:
    production: FakeSalesforce
    sandbox: FakeSalesforce
    api_user: SfUser
    sandbox_user: SfUser
