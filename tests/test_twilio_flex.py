"""Flex Configuration through the SDK, and Flex token validation the way production calls it (plain HTTP)."""

from __future__ import annotations

import base64
import json

import httpx
import jwt
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from flexsf.twilio_client import JsonBody, rebase_url
from sandboxes.twilio import TwilioSandbox
from sandboxes.twilio.demo import DEMO_WORKERS, SALESFORCE_FEATURE_FLAGS


def test_configuration_carries_the_feature_flags(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    config = twilio_client.flex_api.v1.configuration().fetch()
    assert config.account_sid == fresh_twilio_sandbox.account_sid
    assert config.taskrouter_workspace_sid == fresh_twilio_sandbox.workspace_sid
    assert config.taskrouter_target_workflow_sid == fresh_twilio_sandbox.workflow_sid
    assert config.ui_attributes["custom_data"]["features"]["salesforce_integration"] == SALESFORCE_FEATURE_FLAGS
    assert config.service_version and config.status == "ok"


def test_configuration_update_through_the_sdk(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    config = twilio_client.flex_api.v1.configuration()
    ui = config.fetch().ui_attributes
    ui["custom_data"]["features"]["salesforce_integration"]["activity_logging"] = False
    updated = config.update(
        body=JsonBody({"account_sid": sb.account_sid, "ui_attributes": {"custom_data": ui["custom_data"]}})
    )
    flags = updated.ui_attributes["custom_data"]["features"]["salesforce_integration"]
    assert flags["activity_logging"] is False and flags["screen_pop"] is True
    assert config.fetch().ui_attributes["colorTheme"] == {"baseName": "FlexLight"}  # other keys survive


def test_configuration_update_needs_the_account_sid(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.flex_api.v1.configuration().update(body=JsonBody({"ui_attributes": {}}))
    assert (caught.value.status, caught.value.code) == (400, 20001)


def _validate(sb: TwilioSandbox, token: str, auth: tuple[str, str] | None = None) -> httpx.Response:
    # What the gateway does: the IAM endpoint is not in twilio-python, so it is a plain authenticated POST.
    url = rebase_url(f"https://iam.twilio.com/v1/Accounts/{sb.account_sid}/Tokens/validate", sb.url)
    return httpx.post(url, json={"token": token}, auth=auth or (sb.account_sid, sb.auth_token))


def test_valid_agent_token(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    ada = DEMO_WORKERS[0]
    response = _validate(sb, sb.mint_token(ada.sid, ttl_s=600))
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True and body["code"] == 0 and body["message"] is None
    assert (body["worker_sid"], body["identity"], body["roles"]) == (ada.sid, ada.identity, ["agent"])
    assert body["realm_user_id"] and body["expiration"].endswith("Z")


def test_supervisor_token_and_explicit_roles(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    katherine = DEMO_WORKERS[3]
    assert _validate(sb, sb.mint_token(katherine.sid)).json()["roles"] == ["agent", "supervisor"]
    assert _validate(sb, sb.mint_token(DEMO_WORKERS[0].sid, roles=["supervisor"])).json()["roles"] == ["supervisor"]


def test_tokens_are_jwt_shaped(fresh_twilio_sandbox: TwilioSandbox) -> None:
    token = fresh_twilio_sandbox.mint_token(DEMO_WORKERS[0].sid)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["grants"]["identity"] == DEMO_WORKERS[0].identity and claims["exp"] > claims["iat"]


def test_expired_token_is_invalid(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    body = _validate(sb, sb.mint_token(DEMO_WORKERS[0].sid, ttl_s=-5)).json()
    assert (body["valid"], body["code"]) == (False, 20104)


def test_forged_tokens_are_invalid(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    genuine = sb.mint_token(DEMO_WORKERS[0].sid)
    claims = jwt.decode(genuine, options={"verify_signature": False})
    other_secret = jwt.encode(claims, "not-the-sandbox-secret-but-long-enough-for-hs256", algorithm="HS256")
    header, payload, signature = genuine.split(".")
    raised = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raised["grants"]["flex"]["roles"] = ["supervisor"]
    tampered = ".".join([header, base64.urlsafe_b64encode(json.dumps(raised).encode()).decode().rstrip("="), signature])
    for token in (other_secret, tampered, "garbage", ""):
        response = _validate(sb, token)
        assert response.status_code == 200
        assert response.json()["valid"] is False and response.json()["code"] == 20101


def test_validation_needs_account_credentials(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    response = _validate(sb, sb.mint_token(DEMO_WORKERS[0].sid), auth=(sb.account_sid, "wrong"))
    assert response.status_code == 401 and response.json()["code"] == 20003
