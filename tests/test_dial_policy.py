"""Click-to-dial's destination policy (flexsf/dial_policy.py): the pure rules, the settings that shape them, and the
refusal an agent gets from the gateway (`POST /agent/click-to-dial` → 422 with the reason the bridge shows).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from flexsf.dial_policy import DialPolicy, DialRefused
from flexsf.settings import ConfigurationError, Settings, settings_from_env
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import Gateway, gateway_settings, run_gateway

AGENT = tw_demo.DEMO_WORKERS[0]
US = DialPolicy("US")
NORTH_AMERICA_AND_EUROPE = DialPolicy("US", frozenset({"US", "CA", "GB", "DE", "ES", "PT"}))

# (number as Salesforce shows it, the reason the agent reads) — refused with the US default and with a wide list.
REFUSED = [
    pytest.param("+1 900 555 0123", "calls to premium-rate numbers are not allowed", id="us-900-premium"),
    pytest.param("1-900-555-0123", "calls to premium-rate numbers are not allowed", id="us-900-national"),
    pytest.param("+44 909 879 0000", "calls to premium-rate numbers are not allowed", id="uk-09-premium"),
    pytest.param("+44 843 123 4567", "calls to premium-rate numbers are not allowed", id="uk-084-premium"),
    pytest.param("+979 123456789", "calls to premium-rate numbers are not allowed", id="international-premium"),
    pytest.param("+34 901 123 456", "calls to shared-cost numbers are not allowed", id="es-901-shared-cost"),
    pytest.param("+49 180 5001234", "calls to shared-cost numbers are not allowed", id="de-0180-shared-cost"),
    pytest.param("+44 55 1234 5678", "calls to universal access (UAN) numbers are not allowed", id="uk-055-uan"),
    pytest.param("+351 707 123 456", "calls to universal access (UAN) numbers are not allowed", id="pt-707-uan"),
    pytest.param("+44 70 1234 5678", "calls to personal (follow-me) numbers are not allowed", id="uk-070-personal"),
    pytest.param("+1 500 234 5678", "calls to personal (follow-me) numbers are not allowed", id="nanp-500-personal"),
    pytest.param("+49 1641 2345", "calls to pagers are not allowed", id="de-pager"),
    pytest.param("+881 6 1234 5678", "calls to satellite numbers (+881) are not allowed", id="satellite-8816"),
    pytest.param("+870 773 112345", "calls to satellite numbers (+870) are not allowed", id="inmarsat-870"),
    pytest.param(
        "+882 16 12345678", "calls to international non-geographic numbers (+882) are not allowed", id="intl-882"
    ),
    pytest.param("+800 1234 5678", "calls to international non-geographic numbers (+800) are not allowed", id="uifn"),
    pytest.param(
        "+1 876 555 0123",
        "calls to numbers in JM are not allowed (click-to-dial calls CA, DE, ES, GB, PT, US)",
        id="jamaica-one-ring",
    ),
    pytest.param("+7 495 123 4567", "calls to numbers in RU are not allowed", id="another-country"),
    pytest.param("911", "emergency numbers are not dialed from a record: use the dialpad", id="emergency-911"),
    pytest.param("112", "emergency numbers are not dialed from a record: use the dialpad", id="emergency-112"),
    pytest.param("611", "calls to short codes are not allowed", id="short-code"),
    pytest.param("22222", "calls to short codes are not allowed", id="sms-short-code"),
    pytest.param("12345", "the number is not a valid phone number", id="too-short"),
    pytest.param("+1 646 555 01", "the number is not a valid phone number", id="truncated"),
    pytest.param("not a number", "the number is not a valid phone number", id="words"),
    pytest.param("", "the number is not a valid phone number", id="empty"),
    pytest.param("\ufffd", "the number is not a valid phone number", id="replacement-character"),
]


@pytest.mark.parametrize(("number", "reason"), REFUSED)
def test_refused_destinations_say_why(number: str, reason: str):
    for policy in (US, NORTH_AMERICA_AND_EUROPE):
        with pytest.raises(DialRefused) as refused:
            policy.destination(number)
        if "not allowed (click-to-dial calls" in reason and policy is US:
            assert refused.value.reason.endswith("(click-to-dial calls US)")
        else:
            assert refused.value.reason.startswith(reason), refused.value.reason


@pytest.mark.parametrize(
    ("number", "e164"),
    [
        pytest.param("(646) 555-0175", "+16465550175", id="us-national"),
        pytest.param("+1 646 555 0175", "+16465550175", id="us-e164"),
        pytest.param("646.555.0175 ext. 22", "+16465550175", id="us-extension-dropped"),
        pytest.param("+1 800 555 0123", "+18005550123", id="us-toll-free"),
        pytest.param("1-800-FLOWERS", "+18003569377", id="us-vanity"),
    ],
)
def test_ordinary_numbers_of_the_default_country_are_dialed_in_e164(number: str, e164: str):
    assert US.destination(number) == e164


@pytest.mark.parametrize(
    ("number", "country"),
    [("+1 416 555 0123", "CA"), ("+44 20 7946 0018", "GB"), ("+44 7400 123456", "GB"), ("+49 30 123456", "DE")],
)
def test_other_countries_only_when_allowed(number: str, country: str):
    with pytest.raises(DialRefused, match=f"calls to numbers in {country} are not allowed"):
        US.destination(number)
    assert NORTH_AMERICA_AND_EUROPE.destination(number).startswith("+")


def test_the_default_region_reads_national_numbers_and_is_the_one_country_allowed():
    uk = DialPolicy("GB")
    assert uk.destination("020 7946 0018") == "+442079460018"
    with pytest.raises(DialRefused, match="numbers in US are not allowed"):
        uk.destination("+1 646 555 0175")
    with pytest.raises(DialRefused, match="premium-rate"):
        uk.destination("0909 879 0000")
    with pytest.raises(DialRefused, match="emergency"):
        uk.destination("999")


def test_short_codes_when_allowed_but_never_premium_rate_or_emergency():
    allowed = DialPolicy("US", allow_short_codes=True)
    assert allowed.destination("611") == "611"
    assert allowed.destination("22222") == "22222"
    with pytest.raises(DialRefused, match="emergency"):
        allowed.destination("911")
    with pytest.raises(DialRefused, match="not a valid phone number"):
        allowed.destination("12345")  # not a short code of the US either
    with pytest.raises(DialRefused, match="premium-rate numbers"):
        allowed.destination("+1 900 555 0123")
    # A French premium-rate short code (3xxxx numbers cost extra): refused even with short codes on.
    france = DialPolicy("FR", allow_short_codes=True)
    with pytest.raises(DialRefused, match="premium-rate short codes"):
        france.destination("36 17")


# ---- the settings ---------------------------------------------------------------------------------------------------


def test_the_policy_from_settings_defaults_to_the_default_regions_country():
    policy = DialPolicy.from_settings(Settings(_env_file=None))
    assert policy.countries == {"US"} and not policy.allow_short_codes
    policy = DialPolicy.from_settings(settings_from_env({"FLEXSF_DEFAULT_REGION": "gb"}, _env_file=None))
    assert policy.countries == {"GB"} and policy.destination("020 7946 0018") == "+442079460018"


def test_allowed_countries_and_short_codes_come_from_the_environment():
    settings = settings_from_env(
        {"FLEXSF_DIAL_ALLOWED_COUNTRIES": " us, ca ,US", "FLEXSF_DIAL_ALLOW_SHORT_CODES": "true"}, _env_file=None
    )
    assert settings.flexsf_dial_allowed_countries == ["US", "CA"]
    policy = DialPolicy.from_settings(settings)
    assert policy.countries == {"US", "CA"} and policy.destination("611") == "611"
    assert policy.destination("+1 416 555 0123") == "+14165550123"


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("FLEXSF_DIAL_ALLOWED_COUNTRIES", "US,UK", "'UK' is not an ISO 3166 region code"),
        ("FLEXSF_DIAL_ALLOWED_COUNTRIES", "001", "'001' is not an ISO 3166 region code"),
        ("FLEXSF_DEFAULT_REGION", "USA", "'USA' is not an ISO 3166 region code"),
    ],
)
def test_a_region_phonenumbers_does_not_know_is_a_configuration_error(name: str, value: str, problem: str):
    with pytest.raises(ConfigurationError, match=f"{name}: {problem}"):
        settings_from_env({name: value}, _env_file=None)


# ---- through the gateway --------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(twilio_sandbox, temporal_client) -> AsyncIterator[Gateway]:
    """The agent API validating tokens with the Twilio sandbox; click-to-dial needs no workflow, so no worker."""
    twilio_sandbox.reset()
    settings = gateway_settings(
        twilio_sandbox,
        f"dial-{uuid.uuid4()}",
        twilio_api_base_url=twilio_sandbox.url,
        flexsf_dial_allowed_countries=["US", "GB"],
    )
    async with run_gateway(settings, temporal_client) as gw:
        yield gw
    twilio_sandbox.reset()


async def dial(gateway: Gateway, sandbox, number: str) -> httpx.Response:
    token = sandbox.mint_token(AGENT.sid)
    return await gateway.http.post(
        f"{gateway.url}/agent/click-to-dial",
        json={"number": number, "recordId": "00Q000000000001AAA", "objectType": "Lead"},
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    ("number", "reason"),
    [
        pytest.param("+1 900 555 0123", "calls to premium-rate numbers are not allowed", id="premium"),
        pytest.param("+881 6 1234 5678", "calls to satellite numbers (+881) are not allowed", id="satellite"),
        pytest.param("611", "calls to short codes are not allowed", id="short-code"),
        pytest.param(
            "+1 876 555 0123",
            "calls to numbers in JM are not allowed (click-to-dial calls GB, US)",
            id="not-an-allowed-country",
        ),
    ],
)
async def test_the_gateway_refuses_with_422_and_the_reason_for_the_agent(
    gateway: Gateway, twilio_sandbox, number: str, reason: str
):
    response = await dial(gateway, twilio_sandbox, number)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": reason}


@pytest.mark.asyncio(loop_scope="session")
async def test_the_gateway_dials_an_allowed_country_configured_in_the_settings(gateway: Gateway, twilio_sandbox):
    response = await dial(gateway, twilio_sandbox, "+44 20 7946 0018")
    assert response.status_code == 200, response.text
    assert response.json()["destination"] == "+442079460018"
