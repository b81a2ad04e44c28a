"""OAuth flows, token lifetime, revocation and TLS trust, through flexsf.salesforce_client and raw HTTP."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import SalesforceExpiredSession

from flexsf.salesforce_client import (
    JWT_BEARER_GRANT,
    SalesforceAuthError,
    SalesforceCredentials,
    connect,
    fetch_token,
    make_session,
)
from sandboxes.salesforce import SalesforceSandbox
from sandboxes.salesforce.demo import INTEGRATION_USER_ID


@pytest.mark.parametrize("grant", ["client_credentials", "jwt", "password"])
def test_each_grant_connects_simple_salesforce(clean_salesforce_sandbox: SalesforceSandbox, grant: str) -> None:
    creds = clean_salesforce_sandbox.credentials(grant)
    sf = connect(creds, make_session(creds.ca_bundle))
    assert sf.query(f"SELECT Id FROM User WHERE Id = '{INTEGRATION_USER_ID}'")["totalSize"] == 1
    expected = {
        "client_credentials": "login:client_credentials",
        "jwt": "login:jwt_bearer",
        "password": "login:password",
    }
    assert clean_salesforce_sandbox.counters()[expected[grant]] == 1


def test_grant_choice() -> None:
    base = SalesforceCredentials(token_url="https://login.salesforce.com/services/oauth2/token", client_id="c")
    assert dataclasses.replace(base, client_secret="s").grant_type == "client_credentials"
    assert dataclasses.replace(base, client_secret="s", username="u", password="p").grant_type == "password"
    assert dataclasses.replace(base, username="u", private_key_file="k.pem").grant_type == JWT_BEARER_GRANT
    assert base.login_url == "https://login.salesforce.com"
    my_domain = dataclasses.replace(base, token_url="https://acme.my.salesforce.com/services/oauth2/token")
    assert my_domain.login_url == "https://login.salesforce.com"
    sandbox_org = dataclasses.replace(
        base, token_url="https://acme--uat.sandbox.my.salesforce.com/services/oauth2/token"
    )
    assert sandbox_org.login_url == "https://test.salesforce.com"
    local = dataclasses.replace(base, token_url="https://127.0.0.1:8443/services/oauth2/token")
    assert local.login_url == "https://127.0.0.1:8443"


def test_secrets_stay_out_of_repr(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    creds = clean_salesforce_sandbox.credentials("password")
    token = fetch_token(creds, make_session(creds.ca_bundle))
    for text in (repr(creds), repr(token)):
        assert creds.client_secret not in text and creds.password not in text and token.access_token not in text


def test_token_response_shape(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    info = clean_salesforce_sandbox.info
    session = make_session(info["ca_bundle"])
    # client_id/client_secret in the form are accepted as well as HTTP Basic.
    response = session.post(
        info["token_url"],
        data={
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"}
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == info["url"]
    assert body["issued_at"].isdigit() and len(body["issued_at"]) == 13
    assert "Sforce-Limit-Info" not in response.headers
    assert clean_salesforce_sandbox.counters().get("api_usage") == 0


def _token_error(sandbox: SalesforceSandbox, creds: SalesforceCredentials) -> SalesforceAuthError:
    with pytest.raises(SalesforceAuthError) as caught:
        fetch_token(creds, make_session(creds.ca_bundle))
    assert caught.value.status == 400
    return caught.value


def test_bad_client_secret(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    creds = dataclasses.replace(clean_salesforce_sandbox.credentials(), client_secret="wrong-secret")
    error = _token_error(clean_salesforce_sandbox, creds)
    assert error.error == "invalid_client"
    assert "wrong-secret" not in str(error)
    assert clean_salesforce_sandbox.counters()["login_failed"] == 1


def test_bad_password_and_unknown_client(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    creds = clean_salesforce_sandbox.credentials("password")
    assert _token_error(clean_salesforce_sandbox, dataclasses.replace(creds, password="nope")).error == "invalid_grant"
    assert (
        _token_error(clean_salesforce_sandbox, dataclasses.replace(creds, client_id="x")).error == "invalid_client_id"
    )


def test_bad_assertion_body_shape(clean_salesforce_sandbox: SalesforceSandbox, tmp_path: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "other.pem"
    key_file.write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    creds = dataclasses.replace(clean_salesforce_sandbox.credentials("jwt"), private_key_file=str(key_file))
    assert _token_error(clean_salesforce_sandbox, creds).error == "invalid_grant"

    info = clean_salesforce_sandbox.info
    response = make_session(info["ca_bundle"]).post(
        info["token_url"], data={"grant_type": JWT_BEARER_GRANT, "assertion": "not-a-jwt"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "invalid assertion"}


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"aud": "https://evil.example.com"}, "audience is invalid"),
        # The sandbox plays a production org: a sandbox org's audience is refused unless `jwt_audience` says so.
        ({"aud": "https://test.salesforce.com"}, "audience is invalid"),
        ({"exp": int(time.time()) - 10}, "expired authorization code"),
        ({"sub": "someone@else.example.com"}, "user hasn't approved this consumer"),
    ],
)
def test_jwt_claims_are_checked(clean_salesforce_sandbox: SalesforceSandbox, claims: dict, description: str) -> None:
    info = clean_salesforce_sandbox.info
    payload = {
        "iss": info["client_id"],
        "sub": info["username"],
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 60,
        **claims,
    }
    assertion = jwt.encode(payload, Path(info["private_key_file"]).read_bytes(), algorithm="RS256")
    response = make_session(info["ca_bundle"]).post(
        info["token_url"], data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": description}


def _jwt_login(sandbox: SalesforceSandbox, aud: str) -> requests.Response:
    info = sandbox.info
    payload = {"iss": info["client_id"], "sub": info["username"], "aud": aud, "exp": int(time.time()) + 60}
    assertion = jwt.encode(payload, Path(info["private_key_file"]).read_bytes(), algorithm="RS256")
    return make_session(info["ca_bundle"]).post(
        info["token_url"], data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
    )


def test_the_accepted_jwt_audience_is_configurable(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    sandbox = clean_salesforce_sandbox
    own = sandbox.info["url"]
    assert [_jwt_login(sandbox, aud).status_code for aud in (own, "https://login.salesforce.com")] == [200, 200]
    sandbox.faults.set(jwt_audience="https://test.salesforce.com")
    assert _jwt_login(sandbox, "https://test.salesforce.com").status_code == 200
    for aud in (own, "https://login.salesforce.com"):
        refused = _jwt_login(sandbox, aud)
        assert refused.status_code == 400
        assert refused.json() == {"error": "invalid_grant", "error_description": "audience is invalid"}


def test_login_host_mode_refuses_client_credentials_as_salesforce_does(
    clean_salesforce_sandbox: SalesforceSandbox,
) -> None:
    """Salesforce Help 000886201: client credentials need the My Domain; the other grants still work there."""
    clean_salesforce_sandbox.faults.set(login_host=True)
    info = clean_salesforce_sandbox.info
    refused = make_session(info["ca_bundle"]).post(
        info["token_url"], data={"grant_type": "client_credentials"}, auth=(info["client_id"], info["client_secret"])
    )
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_grant", "error_description": "request not supported on this domain"}
    for grant in ("jwt", "password"):
        creds = clean_salesforce_sandbox.credentials(grant)
        fetch_token(creds, make_session(creds.ca_bundle))
    assert clean_salesforce_sandbox.counters()["logins"] == 2


def test_token_expiry_raises_expired_session(clean_salesforce_sandbox: SalesforceSandbox, sf) -> None:
    sf.query("SELECT Id FROM Account LIMIT 1")
    clean_salesforce_sandbox.advance_clock(7201)
    with pytest.raises(SalesforceExpiredSession) as caught:
        sf.query("SELECT Id FROM Account LIMIT 1")
    assert caught.value.status == 401
    assert caught.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_revocation(clean_salesforce_sandbox: SalesforceSandbox, sf) -> None:
    creds = clean_salesforce_sandbox.credentials()
    other = connect(creds, make_session(creds.ca_bundle))
    sf.query("SELECT Id FROM Account LIMIT 1")
    # Revoking one token through the OAuth revoke endpoint leaves the others alive.
    session = make_session(creds.ca_bundle)
    assert (
        session.post(
            f"{clean_salesforce_sandbox.info['url']}/services/oauth2/revoke", data={"token": sf.session_id}
        ).status_code
        == 200
    )
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Account LIMIT 1")
    other.query("SELECT Id FROM Account LIMIT 1")
    assert clean_salesforce_sandbox.revoke_tokens() >= 1
    with pytest.raises(SalesforceExpiredSession):
        other.query("SELECT Id FROM Account LIMIT 1")


def test_sessions_expire_after_n_calls(clean_salesforce_sandbox: SalesforceSandbox, sf) -> None:
    clean_salesforce_sandbox.expire_sessions(after_calls=2)
    sf.query("SELECT Id FROM Account LIMIT 1")
    sf.query("SELECT Id FROM Account LIMIT 1")
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Account LIMIT 1")
    # A new login works again.
    creds = clean_salesforce_sandbox.credentials()
    assert connect(creds, make_session(creds.ca_bundle)).query("SELECT Id FROM Account LIMIT 1")["totalSize"] == 1


def test_private_ca_wins_over_ca_bundle_variables(
    clean_salesforce_sandbox: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Point the variables at a bundle that does not contain the sandbox CA, as on CI machines.
    unrelated = tmp_path / "unrelated.pem"
    unrelated.write_text(Path(requests.certs.where()).read_text())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(unrelated))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(unrelated))
    info = clean_salesforce_sandbox.info
    naive = requests.Session()
    naive.verify = info["ca_bundle"]
    with pytest.raises(requests.exceptions.SSLError):
        naive.get(f"{info['url']}/services/data/")
    assert make_session(info["ca_bundle"]).get(f"{info['url']}/services/data/").status_code == 200


def test_configured_jwt_certificate(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public_file = tmp_path / "public.pem"
    public_file.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with SalesforceSandbox(seed_demo=False, jwt_certificate_file=str(public_file)) as sandbox:
        assert sandbox.info["private_key_file"] is None
        creds = dataclasses.replace(sandbox.credentials("jwt"), private_key_file=str(key_file))
        assert connect(creds).query("SELECT Id FROM User")["totalSize"] == 1
