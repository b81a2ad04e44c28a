"""Configuration is validated at start with one clear message per bad value, and never echoes a secret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flexsf.settings import ConfigurationError, settings_from_env

SECRET = "s3cr3t-value-that-must-not-leak"


# Environments are passed as mappings: setting os.environ while the session's server threads run can crash glibc.


def test_defaults_and_overrides() -> None:
    settings = settings_from_env(
        {"FLEXSF_SEARCH_OBJECTS": "Contact, Case", "FLEXSF_FEATURES__SCREEN_POP": "false"}, _env_file=None
    )
    assert settings.flexsf_search_objects == ["Contact", "Case"]
    assert settings.flexsf_features.screen_pop is False and settings.flexsf_features.enabled is None
    assert settings.flexsf_task_queue == "flex-salesforce"
    assert settings.salesforce_token_url.startswith("https://login.salesforce.com/")


def test_bad_values_name_the_setting_but_never_the_secret() -> None:
    env = {"TWILIO_API_KEY": "SK123", "SALESFORCE_CLIENT_SECRET": SECRET, "FLEXSF_SEARCH_LIMIT": "lots"}
    with pytest.raises(ConfigurationError) as err:
        settings_from_env(env, _env_file=None)
    message = str(err.value)
    assert "FLEXSF_SEARCH_LIMIT" in message and SECRET not in message
    assert SECRET not in repr(settings_from_env(env, _env_file=None, flexsf_search_limit=5, twilio_api_secret="x"))


def test_placeholder_secrets_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="TWILIO_AUTH_TOKEN is a placeholder"):
        settings_from_env({"TWILIO_AUTH_TOKEN": "changeme"}, _env_file=None)


MY_DOMAIN_FIX = "https://<mydomain>.my.salesforce.com/services/oauth2/token"


@pytest.mark.parametrize(
    "token_url",
    [
        "https://login.salesforce.com/services/oauth2/token",
        "https://test.salesforce.com/services/oauth2/token",
        "https://Login.Salesforce.com:443/services/oauth2/token",
        None,  # the default
    ],
)
def test_client_credentials_on_a_login_host_are_refused_with_the_my_domain_fix(token_url: str | None) -> None:
    """Salesforce Help 000886201: the client-credentials flow needs the org's My Domain token endpoint."""
    env = {"SALESFORCE_CLIENT_ID": "3MVG9example", "SALESFORCE_CLIENT_SECRET": SECRET}
    if token_url:
        env["SALESFORCE_TOKEN_URL"] = token_url
    with pytest.raises(ConfigurationError) as err:
        settings_from_env(env, _env_file=None)
    [problem] = str(err.value).splitlines()[1:]
    assert problem.strip().startswith("SALESFORCE_TOKEN_URL") and MY_DOMAIN_FIX in problem, problem
    assert SECRET not in str(err.value)


def test_the_login_hosts_still_serve_the_other_flows_and_a_my_domain_serves_client_credentials(tmp_path) -> None:
    key = tmp_path / "salesforce.key"
    key.write_text("not read at start")
    login_host = {"SALESFORCE_TOKEN_URL": "https://login.salesforce.com/services/oauth2/token"}
    client = {"SALESFORCE_CLIENT_ID": "3MVG9example"}
    jwt = {"SALESFORCE_USERNAME": "integration@example.com", "SALESFORCE_PRIVATE_KEY_FILE": str(key)}
    password = {"SALESFORCE_CLIENT_SECRET": SECRET, "SALESFORCE_USERNAME": "u@example.com", "SALESFORCE_PASSWORD": "p"}
    my_domain = {"SALESFORCE_TOKEN_URL": "https://acme.my.salesforce.com/services/oauth2/token"}
    for env in (
        {**login_host, **client, **jwt},
        {**login_host, **client, **jwt, "SALESFORCE_CLIENT_SECRET": SECRET},  # JWT wins over the secret
        {**login_host, **client, **password},
        {**my_domain, **client, "SALESFORCE_CLIENT_SECRET": SECRET},
        {**login_host},  # Salesforce not configured yet
    ):
        settings_from_env(env, _env_file=None)


def test_jwt_audience_is_optional_and_must_be_a_url() -> None:
    assert settings_from_env({}, _env_file=None).salesforce_jwt_audience is None
    assert settings_from_env({"SALESFORCE_JWT_AUDIENCE": " "}, _env_file=None).salesforce_jwt_audience is None
    chosen = settings_from_env({"SALESFORCE_JWT_AUDIENCE": "https://test.salesforce.com/"}, _env_file=None)
    assert chosen.salesforce_jwt_audience == "https://test.salesforce.com"
    with pytest.raises(ConfigurationError, match="SALESFORCE_JWT_AUDIENCE"):
        settings_from_env({"SALESFORCE_JWT_AUDIENCE": "test.salesforce.com"}, _env_file=None)


def test_worker_refuses_to_start_without_credentials_and_says_which(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "worker"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SALESFORCE_CLIENT_SECRET": SECRET},
    )
    assert done.returncode != 0
    assert "TWILIO_ACCOUNT_SID" in done.stderr and SECRET not in done.stderr + done.stdout


async def test_worker_refuses_a_namespace_without_the_search_attributes(temporal_client) -> None:
    """A dev server started without them (as a self-hosted cluster may be) makes the worker stop with the fix."""
    from temporalio.client import Client

    import worker
    from devtools.temporal_server import TemporalDevServer
    from flexsf.settings import ConfigurationError

    # Started without them, and waited for until it serves (a listening port alone answered "not healthy yet").
    with TemporalDevServer(search_attributes={}, log_level="error") as bare:
        client = await Client.connect(bare.address)
        with pytest.raises(ConfigurationError, match="FlexStage.*flexsf search-attributes --create"):
            await worker.require_search_attributes(client)
        await worker.require_search_attributes(temporal_client)  # the fixtures' server has them: no error
