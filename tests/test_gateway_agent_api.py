"""The gateway's agent API over real HTTP: a running gateway on the stack (Temporal dev server, in-process worker,
both sandboxes), agents authenticated with Flex tokens the Twilio sandbox mints and validates.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from devtools.netutil import free_port
from flexsf.models import Stage
from gateway.app import create_app
from gateway.auth import InvalidToken, TokenValidator
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import run_gateway, settings_from

pytestmark = pytest.mark.asyncio(loop_scope="session")

AGENT, OTHER_AGENT, _, SUPERVISOR = tw_demo.DEMO_WORKERS
assert "supervisor" in SUPERVISOR.roles and "supervisor" not in AGENT.roles
FLEX_ORIGIN = "https://flex.twilio.com"


@dataclass
class Api:
    url: str
    http: httpx.AsyncClient
    stack: object
    metrics_url: str  # the gateway's Prometheus metrics, on their own listener

    def token(self, worker=AGENT, ttl_s: float = 3600, roles: list[str] | None = None) -> str:
        return self.stack.tw.mint_token(worker.sid, ttl_s=ttl_s, roles=roles)

    def auth(self, worker=AGENT, **kw) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(worker, **kw)}"}

    async def get(self, path: str, worker=AGENT, **kw) -> httpx.Response:
        return await self.http.get(self.url + path, headers=self.auth(worker), **kw)

    async def put(self, path: str, body, worker=AGENT) -> httpx.Response:
        return await self.http.put(self.url + path, json=body, headers=self.auth(worker))

    async def post(self, path: str, body, worker=AGENT) -> httpx.Response:
        return await self.http.post(self.url + path, json=body, headers=self.auth(worker))


@asynccontextmanager
async def serve(stack, **env: str) -> AsyncIterator[Api]:
    settings = settings_from({**stack.env, "FLEXSF_CORS_ORIGINS": FLEX_ORIGIN, **env})
    async with run_gateway(settings, stack.client) as gateway:
        yield Api(gateway.url, gateway.http, stack, gateway.metrics_url)


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack) -> AsyncIterator[Api]:
    async with serve(stack) as served:
        yield served


async def popped(stack, phone: str, stage: Stage = Stage.IN_PROGRESS, worker=AGENT) -> str:
    sid = stack.tw.lifecycle({"from": phone}, worker_sid=worker.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == stage)
    return sid


def unknown_sid() -> str:
    return "WT" + uuid.uuid4().hex


# ---- reading a task ------------------------------------------------------------------------------------------------


async def test_get_task_after_a_single_match_pop(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    response = await api.get(f"/agent/tasks/{sid}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task_sid"] == sid and body["stage"] == "in_progress" and body["worker_sid"] == AGENT.sid
    assert body["pop"]["record"]["id"] == sf_demo.UNIQUE_PHONE_CONTACT.id
    assert body["pop"]["record"]["label"] == "Maria Garcia - Contact"
    assert body["pop"]["candidates"] == []
    assert body["record"]["id"] == sf_demo.UNIQUE_PHONE_CONTACT.id
    assert body["direction"] == "Inbound" and body["activity_id"] is None and body["notes"] is None


async def test_logged_task_shows_its_salesforce_task_and_outcome(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    body = (await api.get(f"/agent/tasks/{sid}")).json()
    assert body["stage"] == "logged" and body["outcome"] == "Completed"
    assert body["activity_id"] == view.activity_id and body["activity_id"]


async def test_another_agent_may_not_read_and_a_supervisor_may(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    other = await api.get(f"/agent/tasks/{sid}", worker=OTHER_AGENT)
    assert other.status_code == 403 and "another worker" in other.json()["detail"]
    supervisor = await api.get(f"/agent/tasks/{sid}", worker=SUPERVISOR)
    assert supervisor.status_code == 200 and supervisor.json()["worker_sid"] == AGENT.sid


async def test_a_task_nobody_accepted_is_403_for_an_agent(api: Api, stack):
    sid = stack.tw.create_task({"from": sf_demo.UNIQUE_PHONE_CONTACT.phone})["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.CREATED)
    response = await api.get(f"/agent/tasks/{sid}")
    assert response.status_code == 403 and "not been accepted" in response.json()["detail"]


async def test_unknown_task_is_404_everywhere(api: Api):
    sid = unknown_sid()
    for response in (
        await api.get(f"/agent/tasks/{sid}"),
        await api.put(f"/agent/tasks/{sid}/record", {"record_id": sf_demo.DEMO_LEAD.id}),
        await api.post(f"/agent/tasks/{sid}/notes", {"summary": "hello"}),
    ):
        assert response.status_code == 404, response.text
        assert sid in response.json()["detail"]


# ---- choosing a record ----------------------------------------------------------------------------------------------


async def test_select_one_of_several_matches_writes_it_to_the_task(api: Api, stack):
    sid = await popped(stack, sf_demo.SHARED_PHONE, Stage.AWAITING_SELECTION)
    body = (await api.get(f"/agent/tasks/{sid}")).json()
    assert body["stage"] == "awaiting_selection" and body["pop"]["record"] is None
    assert {c["id"] for c in body["pop"]["candidates"]} == {r.id for r in sf_demo.SHARED_PHONE_RECORDS}
    assert {c["label"] for c in body["pop"]["candidates"]} >= {"Daniel Kim - Contact", "Sam Kim - Lead"}

    chosen = sf_demo.SHARED_PHONE_RECORDS[2]
    response = await api.put(f"/agent/tasks/{sid}/record", {"record_id": chosen.id[:15]})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == chosen.id and response.json()["type"] == "Lead"

    attributes = json.loads(stack.tw.task(sid)["attributes"])
    assert (attributes["sfdcObjectId"], attributes["sfdcObjectType"]) == (chosen.id, "Lead")
    body = (await api.get(f"/agent/tasks/{sid}")).json()
    assert body["stage"] == "in_progress" and body["record"]["id"] == chosen.id


async def test_a_record_that_is_not_a_candidate_is_422_with_the_workflows_reason(api: Api, stack):
    sid = await popped(stack, sf_demo.SHARED_PHONE, Stage.AWAITING_SELECTION)
    response = await api.put(f"/agent/tasks/{sid}/record", {"record_id": sf_demo.DEMO_LEAD.id})
    assert response.status_code == 422
    assert response.json()["detail"] == f"{sf_demo.DEMO_LEAD.id} is not one of the candidate records"
    assert "sfdcObjectId" not in json.loads(stack.tw.task(sid)["attributes"])


async def test_selecting_on_a_task_without_candidates_is_422(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    response = await api.put(f"/agent/tasks/{sid}/record", {"record_id": sf_demo.UNIQUE_PHONE_CONTACT.id})
    assert response.status_code == 422 and "no candidate records" in response.json()["detail"]


async def test_another_agent_and_a_supervisor_may_not_select(api: Api, stack):
    sid = await popped(stack, sf_demo.SHARED_PHONE, Stage.AWAITING_SELECTION)
    choice = {"record_id": sf_demo.SHARED_PHONE_RECORDS[0].id}
    other = await api.put(f"/agent/tasks/{sid}/record", choice, worker=OTHER_AGENT)
    assert other.status_code == 403 and "another worker" in other.json()["detail"]
    supervisor = await api.put(f"/agent/tasks/{sid}/record", choice, worker=SUPERVISOR)
    assert supervisor.status_code == 403 and "supervisors may read" in supervisor.json()["detail"]
    assert (await stack.view(sid)).stage == Stage.AWAITING_SELECTION
    assert "sfdcObjectId" not in json.loads(stack.tw.task(sid)["attributes"])


@pytest.mark.parametrize(
    "stack_overrides", [{"FLEXSF_SELECTION_TIMEOUT_S": "0.2", "FLEXSF_NOTES_GRACE_S": "0"}], indirect=True
)
async def test_a_finished_workflow_is_409_for_changes_and_still_readable(api: Api, stack):
    sid = await popped(stack, sf_demo.SHARED_PHONE, Stage.AWAITING_SELECTION)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED_UNASSOCIATED

    response = await api.put(f"/agent/tasks/{sid}/record", {"record_id": sf_demo.SHARED_PHONE_RECORDS[0].id})
    assert response.status_code == 409 and "finished" in response.json()["detail"]
    response = await api.post(f"/agent/tasks/{sid}/notes", {"summary": "too late"})
    assert response.status_code == 409 and "finished" in response.json()["detail"]
    body = (await api.get(f"/agent/tasks/{sid}")).json()
    assert body["stage"] == "logged_unassociated" and body["notes"] is None


# ---- notes ---------------------------------------------------------------------------------------------------------


async def test_notes_reach_the_workflow(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    notes = {
        "disposition": "Callback",
        "summary": "Wants a callback",
        "topics": ["billing", "router"],
        "sentiment": "neutral",
    }
    response = await api.post(f"/agent/tasks/{sid}/notes", notes)
    assert response.status_code == 204, response.text
    await stack.wait_for(sid, lambda v: v.notes is not None)
    assert (await api.get(f"/agent/tasks/{sid}")).json()["notes"] == notes


async def test_notes_for_another_agents_task_are_403_and_not_delivered(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    for worker in (OTHER_AGENT, SUPERVISOR):
        response = await api.post(f"/agent/tasks/{sid}/notes", {"summary": "not mine"}, worker=worker)
        assert response.status_code == 403
    assert (await stack.view(sid)).notes is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("record", {}),
        ("record", {"record_id": "not-an-id"}),
        ("record", {"record_id": sf_demo.DEMO_LEAD.id, "extra": 1}),
        ("record", [sf_demo.DEMO_LEAD.id]),
        ("notes", {"summary": "x" * 32001}),
        ("notes", {"topics": "billing"}),
        ("notes", {"topics": ["t"] * 51}),
        ("notes", {"disposition": "d" * 256}),
    ],
)
async def test_bad_bodies_are_422_and_reach_nothing(api: Api, stack, path, body):
    sid = await popped(stack, sf_demo.SHARED_PHONE, Stage.AWAITING_SELECTION)
    send = api.put if path == "record" else api.post
    response = await send(f"/agent/tasks/{sid}/{path}", body)
    assert response.status_code == 422, response.text
    view = await stack.view(sid)
    assert view.stage == Stage.AWAITING_SELECTION and view.notes is None


NOTES_AT_THE_CAPS = {
    "disposition": "d" * 255,  # CallDisposition's length
    "summary": "s" * 32_000,  # Task Description's length
    "topics": ["t" * 100] * 20,
    "sentiment": "m" * 64,
}
NOTES_OVER_A_CAP = [
    ({"disposition": "d" * 256}, ["body", "disposition"]),
    ({"summary": "s" * 32_001}, ["body", "summary"]),
    ({"topics": ["t"] * 21}, ["body", "topics"]),
    ({"topics": ["t", "t" * 101]}, ["body", "topics", 1]),
    ({"sentiment": "m" * 65}, ["body", "sentiment"]),
]


async def test_notes_over_a_cap_are_422_naming_the_field_and_notes_at_the_caps_arrive(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    for body, field in NOTES_OVER_A_CAP:
        response = await api.post(f"/agent/tasks/{sid}/notes", {**NOTES_AT_THE_CAPS, **body})
        assert response.status_code == 422, (field, response.text[:300])
        [problem] = response.json()["detail"]
        assert problem["loc"] == field and "at most" in problem["msg"], problem["msg"]
    assert (await stack.view(sid)).notes is None

    response = await api.post(f"/agent/tasks/{sid}/notes", NOTES_AT_THE_CAPS)
    assert response.status_code == 204, response.text[:300]
    view = await stack.wait_for(sid, lambda v: v.notes is not None)
    assert view.notes.model_dump() == NOTES_AT_THE_CAPS


async def test_more_notes_than_a_task_takes_are_422_and_never_reach_its_history(api: Api, stack):
    from temporalio.api.enums.v1 import EventType

    from flexsf.vocabulary import NOTES_PER_TASK_MAX, workflow_id

    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    for n in range(NOTES_PER_TASK_MAX):
        response = await api.post(f"/agent/tasks/{sid}/notes", {"summary": f"take {n}"})
        assert response.status_code == 204, response.text
    refused = await api.post(f"/agent/tasks/{sid}/notes", {"summary": "one too many"})
    assert refused.status_code == 422 and "the most one task takes" in refused.json()["detail"], refused.text
    assert (await stack.view(sid)).notes.summary == f"take {NOTES_PER_TASK_MAX - 1}"  # the last accepted stands
    history = await stack.client.get_workflow_handle(workflow_id(sid)).fetch_history()
    accepted = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
    assert len(accepted) == NOTES_PER_TASK_MAX  # the refused one left nothing behind


async def test_a_malformed_task_sid_is_422(api: Api):
    response = await api.get("/agent/tasks/not-a-task")
    assert response.status_code == 422


# ---- authentication -------------------------------------------------------------------------------------------------


async def test_missing_forged_expired_and_non_bearer_tokens_are_401(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    url = f"{api.url}/agent/tasks/{sid}"
    good = api.token()
    header, payload, signature = good.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    cases = {
        "missing": ({}, "Bearer <Flex token> is required"),
        "basic": ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer <Flex token> is required"),
        "forged": ({"Authorization": f"Bearer {forged}"}, "Invalid Access Token"),
        "garbage": ({"Authorization": "Bearer not-a-token"}, "Invalid Access Token"),
        "expired": ({"Authorization": f"Bearer {api.token(ttl_s=-60)}"}, "expired"),
    }
    # The agent's own token, accepted before: still served once these five refusals reach the address's limit.
    assert (await api.http.get(url, headers={"Authorization": f"Bearer {good}"})).status_code == 200
    for name, (headers, reason) in cases.items():
        response = await api.http.get(url, headers=headers)
        assert response.status_code == 401, name
        assert reason in response.json()["detail"], name
        assert response.headers["www-authenticate"] == "Bearer"
        assert forged not in response.text and good not in response.text
    assert (await api.http.get(url, headers={"Authorization": f"Bearer {good}"})).status_code == 200


# More refusals than the failed-authentication limit allows one address (its 429 is tests/test_token_abuse.py's).
@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_AUTH_FAILURE_LIMIT": "100"}], indirect=True)
async def test_every_agent_endpoint_requires_a_token(api: Api):
    sid = unknown_sid()
    calls = [
        ("GET", f"/agent/tasks/{sid}", None),
        ("GET", f"/agent/tasks/{sid}/pop?wait_s=1", None),
        ("POST", "/agent/pop", {"task_sid": sid, "wait_s": 1}),
        ("PUT", f"/agent/tasks/{sid}/record", {"record_id": "x"}),
        ("POST", f"/agent/tasks/{sid}/notes", {}),
        ("POST", "/agent/click-to-dial", {"number": "1"}),
        ("GET", "/agent/config", None),
    ]
    for method, path, body in calls:
        response = await api.http.request(method, api.url + path, json=body)
        assert response.status_code == 401, (method, path)


async def test_a_valid_token_is_validated_once_until_it_expires(api: Api, stack):
    sid = await popped(stack, sf_demo.UNIQUE_PHONE_CONTACT.phone)
    headers = api.auth()
    before = stack.tw.counters().get("token_validate", 0)
    for _ in range(3):
        assert (await api.http.get(f"{api.url}/agent/tasks/{sid}", headers=headers)).status_code == 200
    assert (await api.http.get(f"{api.url}/agent/config", headers=headers)).status_code == 200
    assert stack.tw.counters()["token_validate"] - before == 1
    # A refused token is asked about once, then answered from memory (FLEXSF_TOKEN_REFUSED_TTL_S).
    for _ in range(2):
        assert (
            await api.http.get(f"{api.url}/agent/config", headers={"Authorization": "Bearer nope"})
        ).status_code == 401
    assert stack.tw.counters()["token_validate"] - before == 2


async def test_the_cache_forgets_a_token_at_its_expiration_and_stays_bounded(stack):
    settings = settings_from(stack.env)
    now = [time.time()]
    async with httpx.AsyncClient(trust_env=False) as http:
        base = TokenValidator.from_settings(settings, http)
        validator = TokenValidator(http, base._url, base._auth, max_entries=2, clock=lambda: now[0])
        calls = lambda: stack.tw.counters().get("token_validate", 0)  # noqa: E731
        ada = stack.tw.mint_token(AGENT.sid, ttl_s=600)
        grace, alan = (stack.tw.mint_token(w.sid, ttl_s=3600) for w in tw_demo.DEMO_WORKERS[1:3])

        assert (await validator.validate(ada)).worker_sid == AGENT.sid
        await validator.validate(ada)
        assert calls() == 1
        now[0] += 601  # past the token's expiration: ask again (Twilio's clock says it is still valid)
        await validator.validate(ada)
        assert calls() == 2

        await validator.validate(grace)
        await validator.validate(alan)  # the third token pushes out the least recently used (ada)
        assert calls() == 4
        await validator.validate(alan)
        await validator.validate(grace)
        assert calls() == 4
        await validator.validate(ada)
        assert calls() == 5

        with pytest.raises(InvalidToken, match="expired"):
            await validator.validate(stack.tw.mint_token(AGENT.sid, ttl_s=-1))


async def test_concurrent_requests_with_a_new_token_validate_it_once(api: Api, stack):
    headers = api.auth(OTHER_AGENT)
    responses = await asyncio.gather(*(api.http.get(f"{api.url}/agent/config", headers=headers) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert stack.tw.counters()["token_validate"] == 1


async def test_twilio_unreachable_is_503(stack):
    async with serve(stack, TWILIO_API_BASE_URL=f"http://127.0.0.1:{free_port()}") as api:
        response = await api.http.get(f"{api.url}/agent/config", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]


async def test_twilio_refusing_the_gateways_credentials_is_503_not_401(stack, caplog):
    async with serve(stack, TWILIO_AUTH_TOKEN="0" * 32) as api:
        response = await api.http.get(f"{api.url}/agent/config", headers=api.auth())
        # The caller is told to retry; the operator's log says why (the body names no internals).
        assert response.status_code == 503 and "retry later" in response.json()["detail"]
        assert "HTTP 401" not in response.text and "HTTP 401" in caplog.text and "TWILIO_AUTH_TOKEN" in caplog.text


@pytest.mark.parametrize("body", ["validation", "error"])
async def test_an_invalid_token_refused_with_a_4xx_is_401_and_a_5xx_is_503(api: Api, stack, body: str, caplog):
    url = f"{api.url}/agent/config"
    stack.tw.faults.update(token_invalid_status=401, token_invalid_body=body)
    response = await api.http.get(url, headers={"Authorization": f"Bearer {api.token(ttl_s=-60)}"})
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"

    stack.tw.faults.update(fail_next=[502], endpoints=["token_validate"])
    headers = api.auth()
    response = await api.http.get(url, headers=headers)
    assert response.status_code == 503 and "HTTP 502" not in response.text and "HTTP 502" in caplog.text
    assert (await api.http.get(url, headers=headers)).status_code == 200  # an outage answer is not remembered


# ---- click-to-dial and config ---------------------------------------------------------------------------------------


async def test_click_to_dial_gives_the_start_outbound_call_payload_and_the_call_relates(api: Api, stack):
    lead = sf_demo.DEMO_LEAD
    response = await api.post(
        "/agent/click-to-dial",
        {
            "number": lead.phone,
            "recordId": lead.id,
            "objectType": "Lead",
            "recordName": lead.name,
            "personAccount": False,
            "params": "ignored",
        },
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload == {
        "destination": "+16465550175",
        "taskAttributes": {"sfdcObjectId": lead.id, "sfdcObjectType": "Lead", "name": lead.name},
    }

    # What Flex does with it: StartOutboundCall → an outbound task the workflow relates to the dialed record.
    sid = stack.tw.start_outbound_call(AGENT.sid, payload["destination"], task_attributes=payload["taskAttributes"])[
        "sid"
    ]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    body = (await api.get(f"/agent/tasks/{sid}")).json()
    assert body["direction"] == "Outbound" and body["record"]["id"] == lead.id


async def test_click_to_dial_on_a_person_account_dials_its_contact(api: Api):
    person = sf_demo.PERSON_ACCOUNT
    response = await api.post(
        "/agent/click-to-dial",
        {
            "number": person.phone,
            "recordId": person.id,
            "objectType": "Account",
            "recordName": person.name,
            "accountId": person.id,
            "contactId": sf_demo.PERSON_ACCOUNT_CONTACT_ID,
            "personAccount": True,
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "destination": "+16285550162",
        "taskAttributes": {
            "sfdcObjectId": sf_demo.PERSON_ACCOUNT_CONTACT_ID,
            "sfdcObjectType": "Contact",
            "name": person.name,
        },
    }


async def test_click_to_dial_without_an_object_type_takes_it_from_the_id(api: Api):
    account = sf_demo.UNIQUE_PHONE_ACCOUNT
    response = await api.post("/agent/click-to-dial", {"number": account.phone, "recordId": account.id})
    assert response.status_code == 200
    # No recordName: no `name` key at all, so Flex's own name for the outbound task stands (never a null).
    assert response.json()["taskAttributes"] == {"sfdcObjectId": account.id, "sfdcObjectType": "Account"}


async def test_click_to_dial_of_a_bare_number_sends_no_null_attributes(api: Api):
    response = await api.post("/agent/click-to-dial", {"number": sf_demo.DEMO_LEAD.phone})
    assert response.status_code == 200, response.text
    assert response.json() == {"destination": "+16465550175", "taskAttributes": {}}
    assert "null" not in response.text


@pytest.mark.parametrize(
    "body",
    [
        {"number": "12345"},
        {"number": "not a number"},
        {"number": ""},
        {"number": "+1" + "5" * 70},
        {"number": sf_demo.DEMO_LEAD.phone, "recordId": "nope"},
        {"recordId": sf_demo.DEMO_LEAD.id},
    ],
)
async def test_click_to_dial_on_something_that_is_not_a_phone_number_is_422(api: Api, body):
    response = await api.post("/agent/click-to-dial", body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_FEATURES__CLICK_TO_DIAL": "false"}], indirect=True)
async def test_click_to_dial_off_is_409_and_config_says_so(api: Api):
    response = await api.post("/agent/click-to-dial", {"number": sf_demo.DEMO_LEAD.phone})
    assert response.status_code == 409 and "click-to-dial is off" in response.json()["detail"]
    config = (await api.get("/agent/config")).json()
    assert config["click_to_dial"] is False and config["screen_pop"] is True


async def test_config_shows_the_flex_flags(api: Api):
    response = await api.get("/agent/config")
    assert response.status_code == 200
    assert response.json() == {flag: True for flag in tw_demo.SALESFORCE_FEATURE_FLAGS}


# ---- browsers ------------------------------------------------------------------------------------------------------


async def test_cors_allows_the_configured_origins_only(api: Api):
    preflight = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = await api.http.options(f"{api.url}/agent/config", headers={"Origin": FLEX_ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == FLEX_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    refused = await api.http.options(f"{api.url}/agent/config", headers={"Origin": "https://evil.example", **preflight})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    simple = await api.http.get(f"{api.url}/agent/config", headers={"Origin": FLEX_ORIGIN, **api.auth()})
    assert simple.headers["access-control-allow-origin"] == FLEX_ORIGIN


async def test_the_pops_preflight_allows_the_bridges_post_for_chromiums_longest_cache(api: Api):
    """What the bridge's `POST /agent/pop` needs from its preflight, kept by the browser for as long as Chromium keeps
    any (two hours): one preflight then covers every task's pop (tests/test_agent_bridge.py counts them)."""
    preflight = {
        "Origin": FLEX_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = await api.http.options(f"{api.url}/agent/pop", headers=preflight)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == FLEX_ORIGIN
    assert "POST" in {m.strip() for m in allowed.headers["access-control-allow-methods"].split(",")}
    headers = {h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= headers
    assert allowed.headers["access-control-max-age"] == "7200"


async def test_openapi_is_off_by_default_and_documents_the_agent_api_when_enabled(api: Api, stack):
    # The public port shows no docs unless FLEXSF_GATEWAY_DOCS asks for them (`flexsf dev` does).
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await api.http.get(api.url + path)).status_code == 404, path
    async with serve(stack, FLEXSF_GATEWAY_DOCS="true") as documented:
        schema = (await documented.http.get(f"{documented.url}/openapi.json")).json()
        assert (await documented.http.get(f"{documented.url}/docs")).status_code == 200
    assert {
        "/agent/tasks/{task_sid}",
        "/agent/tasks/{task_sid}/pop",
        "/agent/pop",
        "/agent/tasks/{task_sid}/record",
        "/agent/tasks/{task_sid}/notes",
        "/agent/click-to-dial",
        "/agent/config",
    } <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["FlexToken"]["scheme"] == "bearer"
    assert {
        "TaskOut",
        "PopRequest",
        "PopAnswerOut",
        "RecordChoice",
        "NotesIn",
        "ClickToDialIn",
        "StartOutboundCall",
        "AgentConfig",
    } <= set(schema["components"]["schemas"])
    # The same schema the app object builds, which the fuzzing below reads (whatever the public port serves).
    assert schema == create_app(settings_from(stack.env), dev=True).openapi()


# ---- schema fuzzing -------------------------------------------------------------------------------------------------

FUZZ_EXAMPLES = 30


def fuzz_agent_api(url: str, token: str, task_sid: str, openapi: dict) -> int:
    """Generated requests for every agent operation, with a valid token: none may get a 5xx. Returns the call count.

    The schema comes from the app object (`openapi`): the public port serves none unless FLEXSF_GATEWAY_DOCS is on."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    loaded = schemathesis.openapi.from_dict(openapi)
    loaded.config.update(base_url=url)
    schema = loaded.include(path_regex="^/agent/")
    headers = {"Authorization": f"Bearer {token}"}
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        # The pop's long-poll waits up to wait_s for a decision that never comes for a made-up sid: keep it short.
        asks_by_path = operation.path == "/agent/tasks/{task_sid}/pop"
        fixed = {"query": {"wait_s": 0.05}} if asks_by_path else {}
        strategies = [operation.as_strategy(**fixed)]
        if "{task_sid}" in operation.path:
            # a real, owned task
            strategies.append(operation.as_strategy(path_parameters={"task_sid": task_sid}, **fixed))
        if operation.path == "/agent/pop":
            # Its sid is in the body: generated ones are unknown to TaskRouter (404 at once); this one is owned.
            strategies.append(operation.as_strategy(body={"task_sid": task_sid, "wait_s": 0.05}))
        for strategy in strategies:

            @settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def check(case) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            check()
    return calls


async def test_fuzzed_requests_never_get_a_server_error(api: Api, stack):
    sid = await popped(stack, sf_demo.SHARED_PHONE, Stage.AWAITING_SELECTION)
    openapi = create_app(settings_from(stack.env), dev=True).openapi()
    calls = await asyncio.to_thread(fuzz_agent_api, api.url, api.token(), sid, openapi)
    assert calls >= 5 * FUZZ_EXAMPLES
    assert stack.tw.counters()["token_validate"] == 1
