"""flexsf.twilio_client: the SDK pointed at a base URL, and the sandbox's auth."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException

from flexsf.twilio_client import build_twilio_client, rebase_url
from sandboxes.twilio import TwilioSandbox


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://taskrouter.twilio.com/v1/Workspaces/WS1/Tasks?PageSize=2",
            "http://h:1/v1/Workspaces/WS1/Tasks?PageSize=2",
        ),
        ("https://flex-api.twilio.com/v1/Configuration", "http://h:1/v1/Configuration"),
        ("https://iam.twilio.com/v1/Accounts/AC1/Tokens/validate", "http://h:1/v1/Accounts/AC1/Tokens/validate"),
        ("https://taskrouter.us1.twilio.com/v1/Workspaces", "http://h:1/v1/Workspaces"),
        ("http://h:1/v1/Workspaces?Page=1", "http://h:1/v1/Workspaces?Page=1"),
        ("https://example.com/v1/x", "https://example.com/v1/x"),
        ("https://twilio.com.evil.example/v1/x", "https://twilio.com.evil.example/v1/x"),
    ],
)
def test_rebase_url_replaces_only_twilio_hosts(url: str, expected: str) -> None:
    assert rebase_url(url, "http://h:1/") == expected


def test_no_base_url_leaves_twilio_urls_alone() -> None:
    assert rebase_url("https://taskrouter.twilio.com/v1/x", None) == "https://taskrouter.twilio.com/v1/x"


def test_api_key_auth(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    client = build_twilio_client(sb.account_sid, api_key=sb.api_key_sid, api_secret=sb.api_key_secret, base_url=sb.url)
    workspace = client.taskrouter.v1.workspaces(sb.workspace_sid).fetch()
    assert workspace.sid == sb.workspace_sid
    assert workspace.friendly_name == "Flex Task Assignment"


def test_wrong_credentials_are_401_code_20003(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    client = build_twilio_client(sb.account_sid, "not-the-token", base_url=sb.url)
    with pytest.raises(TwilioRestException) as caught:
        client.taskrouter.v1.workspaces(sb.workspace_sid).fetch()
    assert (caught.value.status, caught.value.code) == (401, 20003)


def test_list_errors_surface_as_plain_twilio_exception(fresh_twilio_sandbox: TwilioSandbox) -> None:
    # twilio-python quirk worth knowing: list/page calls raise TwilioException("Unable to fetch page", response)
    # for any non-200, not TwilioRestException, so callers read the status from the response.
    sb = fresh_twilio_sandbox
    client = build_twilio_client(sb.account_sid, "not-the-token", base_url=sb.url)
    with pytest.raises(TwilioException) as caught:
        client.taskrouter.v1.workspaces(sb.workspace_sid).events.list()
    assert not isinstance(caught.value, TwilioRestException)
    assert caught.value.args[1].status_code == 401


def test_credentials_must_be_complete() -> None:
    with pytest.raises(ValueError):
        build_twilio_client("AC" + "0" * 32)
    with pytest.raises(ValueError):
        build_twilio_client("AC" + "0" * 32, api_key="SK" + "0" * 32)
