"""pytest fixtures for the salesforce sandbox."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from simple_salesforce import Salesforce

from activities.models import ActivityLogRequest
from flexsf.models import RecordRef
from flexsf.salesforce_client import connect, make_session
from sandboxes.salesforce import SalesforceSandbox
from sandboxes.salesforce import demo as sf_demo


def log_request(**overrides) -> ActivityLogRequest:
    """A finished inbound call related to the demo contact with a unique phone. Each gets a task of its own: the
    session sandbox keeps its records between tests."""
    base = dict(
        task_sid="WT" + uuid.uuid4().hex,
        outcome="Completed",
        direction="Inbound",
        channel="voice",
        finished_at=datetime(2026, 11, 25, 14, 5, tzinfo=UTC),
        related=RecordRef(id=sf_demo.UNIQUE_PHONE_CONTACT.id, type="Contact"),
    )
    return ActivityLogRequest(**{**base, **overrides})


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
