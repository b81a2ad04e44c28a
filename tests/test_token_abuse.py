"""Forged, repeated and revoked Flex tokens cost Twilio (and our credentials) next to nothing (issue 14, item 3).

A real gateway over real HTTP, its token validation answered by the Twilio sandbox, whose counters say how many
`Tokens/validate` calls were made. The attacker connects from 127.0.0.2, agents from 127.0.0.1 (both loopback
addresses, so two distinct socket peers), or through a trusted proxy that names them in X-Forwarded-For.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from flexsf.settings import Settings
from gateway.auth import AuthFailureLimiter, InvalidToken, TokenValidator
from gateway.client_address import client_address, limiter_key, trusted_networks
from sandboxes.twilio import demo as tw_demo
from sandboxes.twilio.tokens import TokenAuthority
from tests.fixtures_stack import Gateway, eventually, gateway_settings, run_gateway

pytestmark = pytest.mark.asyncio(loop_scope="session")

AGENT, OTHER_AGENT = tw_demo.DEMO_WORKERS[:2]
ATTACKER_SOCKET = "127.0.0.2"
CONFIG = "/agent/config"


def validations(sandbox) -> int:
    return sandbox.counters().get("token_validate", 0)


# The default failure limit: what one address's forged tokens may cost in validation calls.
LIMIT = Settings.model_fields["flexsf_auth_failure_limit"].default


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forged() -> str:
    return "eyJhbGciOiJIUzI1NiJ9.forged." + uuid.uuid4().hex


@asynccontextmanager
async def gateway_for(sandbox, temporal_client, **settings) -> AsyncIterator[Gateway]:
    """A gateway validating tokens with the sandbox (`settings` are Settings fields)."""
    configured = gateway_settings(
        sandbox, f"tokens-{uuid.uuid4()}", twilio_api_base_url=sandbox.url, flexsf_flex_config_ttl_s=0, **settings
    )
    async with run_gateway(configured, temporal_client) as gateway:
        yield gateway


@asynccontextmanager
async def attacker_client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(local_address=ATTACKER_SOCKET)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=30) as http:
        yield http


async def test_a_hundred_forged_tokens_cost_a_handful_of_validations_then_429s_and_agents_go_on(
    fresh_twilio_sandbox, temporal_client
):
    sb = fresh_twilio_sandbox
    agent = bearer(sb.mint_token(AGENT.sid))
    async with gateway_for(sb, temporal_client) as gw, attacker_client() as attacker:
        before = validations(sb)
        attack: list[httpx.Response] = []
        agent_answers: list[int] = []
        for i in range(100):
            attack.append(await attacker.get(gw.url + CONFIG, headers=bearer(forged())))
            if i % 10 == 9:  # a real agent's requests, interleaved, from another address
                agent_answers.append((await gw.http.get(gw.url + CONFIG, headers=agent)).status_code)
        calls = validations(sb) - before

    assert [r.status_code for r in attack] == [401] * LIMIT + [429] * (100 - LIMIT)
    assert agent_answers == [200] * 10
    # As many forged tokens were asked about as the failure limit, and the agent's token once; the rest cost nothing.
    assert calls == LIMIT + 1, calls
    for refused in attack[LIMIT:]:
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["detail"] == "too many failed authentications from this address; retry later"


async def test_a_hundred_concurrent_forged_tokens_cost_no_more(fresh_twilio_sandbox, temporal_client):
    """A burst, not a sequence: validations still waiting for Twilio hold their places in the limit."""
    sb = fresh_twilio_sandbox
    async with gateway_for(sb, temporal_client) as gw, attacker_client() as attacker:
        before = validations(sb)
        burst = await asyncio.gather(*(attacker.get(gw.url + CONFIG, headers=bearer(forged())) for _ in range(100)))
        calls = validations(sb) - before
        statuses = sorted(r.status_code for r in burst)
        assert statuses == [401] * LIMIT + [429] * (100 - LIMIT) and calls == LIMIT, (calls, statuses)
        agent = bearer(sb.mint_token(AGENT.sid))
        assert (await gw.http.get(gw.url + CONFIG, headers=agent)).status_code == 200


async def test_one_forged_token_sent_again_is_refused_from_memory(fresh_twilio_sandbox, temporal_client):
    sb = fresh_twilio_sandbox
    token = forged()
    async with gateway_for(sb, temporal_client, flexsf_auth_failure_limit=1000) as gw:
        before = validations(sb)
        answers = [(await gw.http.get(gw.url + CONFIG, headers=bearer(token))).status_code for _ in range(50)]
        assert answers == [401] * 50
        assert validations(sb) - before == 1


async def test_a_blocked_address_keeps_tokens_already_accepted_and_nothing_else(fresh_twilio_sandbox, temporal_client):
    """An agent behind the same address as an attacker (one office NAT) keeps working with the token Twilio already
    accepted; a token nobody has validated yet waits for the window (Retry-After)."""
    sb = fresh_twilio_sandbox
    known, new = bearer(sb.mint_token(AGENT.sid)), bearer(sb.mint_token(OTHER_AGENT.sid))
    async with gateway_for(sb, temporal_client) as gw, attacker_client() as shared:
        assert (await gw.http.get(gw.url + CONFIG, headers=known)).status_code == 200
        while (await shared.get(gw.url + CONFIG, headers=bearer(forged()))).status_code != 429:
            pass
        before = validations(sb)
        assert (await shared.get(gw.url + CONFIG, headers=known)).status_code == 200
        assert (await shared.get(gw.url + CONFIG, headers=new)).status_code == 429
        assert (await shared.get(gw.url + CONFIG)).status_code == 429  # no token at all: the same answer
        assert validations(sb) == before
        assert (await gw.http.get(gw.url + CONFIG, headers=new)).status_code == 200  # from its own address


async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(fresh_twilio_sandbox, temporal_client):
    sb = fresh_twilio_sandbox
    agent = bearer(sb.mint_token(AGENT.sid))
    async with gateway_for(sb, temporal_client, flexsf_trusted_proxies=["127.0.0.1/32"]) as gw:
        answers = []
        for i in range(20):
            # What the client wrote itself (left of the proxy's entry) changes every time and proves nothing.
            hops = {"X-Forwarded-For": f"10.9.{i}.1, 203.0.113.7"}
            answers.append((await gw.http.get(gw.url + CONFIG, headers=bearer(forged()) | hops)).status_code)
        assert answers == [401] * LIMIT + [429] * (20 - LIMIT)
        other = {"X-Forwarded-For": "198.51.100.20"}
        assert (await gw.http.get(gw.url + CONFIG, headers=agent | other)).status_code == 200


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(fresh_twilio_sandbox, temporal_client):
    sb = fresh_twilio_sandbox
    async with gateway_for(sb, temporal_client) as gw, attacker_client() as attacker:
        answers = []
        for i in range(15):
            spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
            answers.append((await attacker.get(gw.url + CONFIG, headers=bearer(forged()) | spoofed)).status_code)
        assert answers == [401] * LIMIT + [429] * (15 - LIMIT)


async def test_an_address_may_try_again_once_its_failures_leave_the_window(fresh_twilio_sandbox, temporal_client):
    sb = fresh_twilio_sandbox
    settings = {"flexsf_auth_failure_limit": 2, "flexsf_auth_failure_window_s": 0.5}
    async with gateway_for(sb, temporal_client, **settings) as gw:
        statuses = [(await gw.http.get(gw.url + CONFIG, headers=bearer(forged()))).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]

        async def unblocked() -> bool:
            return (await gw.http.get(gw.url + CONFIG, headers=bearer(sb.mint_token(AGENT.sid)))).status_code == 200

        await eventually(unblocked, timeout=10, what="the address is served again")


async def test_a_revoked_token_stops_working_within_the_revalidation_period(
    fresh_twilio_sandbox, temporal_client, monkeypatch
):
    """The sandbox has no revocation of its own; Twilio's answer for a revoked token is the one for an invalid token,
    so the sandbox's validation is made to give it for this token."""
    sb = fresh_twilio_sandbox
    token = sb.mint_token(AGENT.sid, ttl_s=3600)
    revoked: set[str] = set()
    validate = TokenAuthority.validate

    def validate_unless_revoked(self, presented):
        return self._invalid(20101, "Invalid Access Token") if presented in revoked else validate(self, presented)

    monkeypatch.setattr(TokenAuthority, "validate", validate_unless_revoked)
    async with gateway_for(sb, temporal_client, flexsf_token_revalidate_s=0.5) as gw:
        assert (await gw.http.get(gw.url + CONFIG, headers=bearer(token))).status_code == 200
        revoked.add(token)
        started = time.monotonic()

        async def refused() -> bool:
            return (await gw.http.get(gw.url + CONFIG, headers=bearer(token))).status_code == 401

        await eventually(refused, timeout=10, what="the revoked token is refused")
        # Refused once the period was over (the old behaviour trusted it for its whole hour).
        assert time.monotonic() - started < 10
        assert (await gw.http.get(gw.url + CONFIG, headers=bearer(token))).status_code == 401


async def test_while_twilio_cannot_answer_an_accepted_token_keeps_working(fresh_twilio_sandbox, temporal_client):
    sb = fresh_twilio_sandbox
    token = bearer(sb.mint_token(AGENT.sid))
    async with gateway_for(sb, temporal_client, flexsf_token_revalidate_s=0.2) as gw:
        assert (await gw.http.get(gw.url + CONFIG, headers=token)).status_code == 200
        sb.faults.update(server_error_fraction=1.0, endpoints=["token_validate"])
        asked = validations(sb)

        async def revalidated() -> bool:
            answer = await gw.http.get(gw.url + CONFIG, headers=token)
            assert answer.status_code == 200, answer.text
            return validations(sb) > asked

        await eventually(revalidated, timeout=10, what="a revalidation while Twilio fails")
        # A token Twilio never accepted cannot be vouched for: 503, and it does not count as a failure.
        fresh = await gw.http.get(gw.url + CONFIG, headers=bearer(sb.mint_token(OTHER_AGENT.sid)))
        assert fresh.status_code == 503 and fresh.json()["detail"].endswith("retry later")


# ---- the parts, on a clock of our own ------------------------------------------------------------------------------


async def test_the_validator_revalidates_after_its_period_and_remembers_refusals_for_theirs(fresh_twilio_sandbox):
    sb = fresh_twilio_sandbox
    settings = gateway_settings(sb, "unused", twilio_api_base_url=sb.url)
    now = [time.time()]
    async with httpx.AsyncClient(trust_env=False) as http:
        base = TokenValidator.from_settings(settings, http)
        validator = TokenValidator(
            http, base._url, base._auth, clock=lambda: now[0], revalidate_s=300, refused_ttl_s=60
        )
        token, bad = sb.mint_token(AGENT.sid, ttl_s=3600), forged()
        before = validations(sb)

        await validator.validate(token)
        now[0] += 299
        await validator.validate(token)
        assert validations(sb) - before == 1
        now[0] += 2  # 301 s after Twilio said yes: ask again
        await validator.validate(token)
        assert validations(sb) - before == 2

        for _ in range(3):
            with pytest.raises(InvalidToken, match="Invalid Access Token"):
                await validator.validate(bad)
        assert validations(sb) - before == 3 and validator.refused_from_memory == 2
        now[0] += 61  # the refusal is forgotten: asked again
        with pytest.raises(InvalidToken):
            await validator.validate(bad)
        assert validations(sb) - before == 4


async def test_the_failure_limiter_counts_a_sliding_window_and_stays_bounded():
    now = [1000.0]
    limiter = AuthFailureLimiter(limit=3, window_s=60, clock=lambda: now[0], max_clients=2)
    for _ in range(2):
        limiter.failed("a")
    assert limiter.retry_after("a") is None
    now[0] += 10
    limiter.failed("a")
    assert limiter.retry_after("a") == 50  # the first failure leaves the window at 1060
    now[0] += 50
    assert limiter.retry_after("a") is None  # two failures left in the window
    limiter.failed("b")
    limiter.failed("c")  # a third client pushes out the least recently failing one ("a")
    assert len(limiter._failures) == 2 and "a" not in limiter._failures

    with limiter.attempt("d", "t1"), limiter.attempt("d", "t2"), limiter.attempt("d", "t2"):
        assert limiter.retry_after("d") is None  # two tokens in flight (one of them in two requests)
        with limiter.attempt("d", "t3"):  # three tokens in flight fill the limit until they are answered
            assert limiter.retry_after("d") == 1.0
    assert limiter.retry_after("d") is None and not limiter._pending


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        ("203.0.113.9", None, [], "203.0.113.9"),
        ("203.0.113.9", "198.51.100.1", [], "203.0.113.9"),  # not from a trusted proxy: the header is ignored
        ("10.0.0.2", "198.51.100.1", ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.3", ["10.0.0.0/8"], "198.51.100.1"),  # right-most untrusted
        ("10.0.0.2", "10.0.0.5, 10.0.0.3", ["10.0.0.0/8"], "10.0.0.5"),  # all trusted: the left-most
        ("10.0.0.2", "junk\r\nX-Evil: 1, 10.0.0.3", ["10.0.0.0/8"], "10.0.0.3"),  # unreadable: the last trusted hop
        ("10.0.0.2", "[2001:db8::1]:443", ["10.0.0.0/8"], "2001:db8::1"),
        ("10.0.0.2", "198.51.100.1:5555", ["10.0.0.0/8"], "198.51.100.1"),
        ("::ffff:10.0.0.2", "198.51.100.1", ["10.0.0.0/8"], "198.51.100.1"),  # v4-mapped peer
    ],
)
async def test_the_client_address(peer, forwarded, trusted, client):
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": (peer, 1234), "headers": headers}
    assert client_address(scope, trusted_networks(trusted)) == ipaddress.ip_address(client)


async def test_ipv6_clients_are_counted_per_64():
    one, other = ipaddress.ip_address("2001:db8:1:2::1"), ipaddress.ip_address("2001:db8:1:2:ffff::9")
    assert limiter_key(one) == limiter_key(other) == "2001:db8:1:2::/64"
    assert limiter_key(ipaddress.ip_address("2001:db8:1:3::1")) != limiter_key(one)
    assert limiter_key(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1" and limiter_key(None) == "unknown"
