"""pytest fixtures for the salesforce sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simple_salesforce import Salesforce

from flexsf.salesforce_client import connect, make_session
from sandboxes.salesforce import SalesforceSandbox


@pytest.fixture(scope="session")
def salesforce_sandbox() -> Iterator[SalesforceSandbox]:
    """One in-process sandbox per test session: in-memory state, demo org seeded."""
    with SalesforceSandbox(port=0, state=":memory:", seed_demo=True) as sandbox:
        yield sandbox


@pytest.fixture
def clean_salesforce_sandbox(salesforce_sandbox: SalesforceSandbox) -> Iterator[SalesforceSandbox]:
    """The session sandbox with faults off and counters, API usage and clock reset before and after the test."""
    salesforce_sandbox.reset()
    yield salesforce_sandbox
    salesforce_sandbox.reset()


@pytest.fixture
def sf(clean_salesforce_sandbox: SalesforceSandbox) -> Salesforce:
    """A simple-salesforce client logged in to the sandbox through `flexsf.salesforce_client`."""
    creds = clean_salesforce_sandbox.credentials()
    return connect(creds, make_session(creds.ca_bundle))
