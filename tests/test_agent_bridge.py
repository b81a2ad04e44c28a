"""The agent bridge (agent-bridge/dist/bridge.js, as built) in a real Chromium, against the real stack.

A "Salesforce" page on one origin frames a "Flex" page on another, as Lightning frames the softphone. The Flex page
runs the bridge on stand-ins for Flex UI (tests/agent_bridge/flex-standin.js) and loads the Open CTI and Console API
stand-ins from the Salesforce origin at Salesforce's own script paths. The bridge talks over HTTP to a gateway on a real
port, wired to Temporal, an in-process worker and both sandboxes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Frame, Page, async_playwright
from prometheus_client.parser import text_string_to_metric_families

from devtools import agent_desk as desk_pages
from devtools.agent_desk import BRIDGE, BUNDLE, CHROMIUM, CHROMIUM_FLAGS, StaticServer
from flexsf.models import Stage
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import Stack, eventually, stack_env, stack_gateway, start_stack_worker
from tests.test_gateway_agent_api import Api, serve

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
AGENT = tw_demo.DEMO_WORKERS[0]
API_VERSION = "52.0"


def ensure_bundle() -> None:
    """The bundle must be built from the current sources (`make bridge`); rebuilt here when npm ci has run."""
    sources = [p for p in (BRIDGE / "src").rglob("*.ts")] + [BRIDGE / "package.json"]
    fresh = BUNDLE.exists() and BUNDLE.stat().st_mtime >= max(p.stat().st_mtime for p in sources)
    if fresh:
        return
    if (BRIDGE / "node_modules" / ".bin" / "esbuild").exists():
        subprocess.run(["npm", "run", "--silent", "build"], cwd=BRIDGE, check=True)
        return
    pytest.fail(f"{BUNDLE.relative_to(ROOT)} is missing or older than its sources: run `make bridge` (npm ci + build)")


@dataclass
class Origins:
    flex: StaticServer
    salesforce: StaticServer
    elsewhere: StaticServer  # a page that is not the configured Salesforce origin (another org, an attacker's page)


@pytest.fixture(scope="session")
def origins() -> Iterator[Origins]:
    ensure_bundle()
    served = Origins(StaticServer(), StaticServer(), StaticServer())
    yield served
    served.flex.close()
    served.salesforce.close()
    served.elsewhere.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


@dataclass
class Desk:
    """An agent's desk: Salesforce framing Flex, with the bridge running in the Flex frame."""

    page: Page
    frame: Frame
    origins: Origins

    async def reload(self) -> None:
        await self.page.reload()
        self.frame = await bridge_frame(self.page, self.origins)

    async def flex(self, script: str, arg=None):
        return await self.frame.evaluate(script, arg)

    async def accept(self, sid: str, attributes: dict | None = None) -> dict:
        """The agent accepts: Flex's AcceptTask action, resolved once every after-listener (the pop) is done."""
        return await self.flex(
            "([sid, attributes]) => FlexStandIn.flex.Actions.invokeAction('AcceptTask', "
            "{task: {taskSid: sid, attributes}})",
            [sid, attributes or {"direction": "inbound"}],
        )

    async def complete(self, sid: str) -> dict:
        return await self.flex(
            "(sid) => FlexStandIn.flex.Actions.invokeAction('CompleteTask', {task: {taskSid: sid}})", sid
        )

    async def sforce_calls(self, api: str) -> list:
        return await self.flex("(api) => SforceStandIn.callsTo(api)", api)

    async def flex_calls(self, api: str) -> list:
        return await self.flex("(api) => FlexStandIn.callsTo(api)", api)

    async def log(self) -> list[str]:
        return await self.flex("() => FlexStandIn.log")

    async def notices(self) -> list[str]:
        return [c["context"]["message"] for c in await self.flex_calls("Notifications.showNotification")]

    def dropdown(self, sid: str):
        return self.frame.locator(f'section[data-task-sid="{sid}"] select[data-flexsf="record-select"]')

    def status(self, sid: str):
        return self.frame.locator(f'section[data-task-sid="{sid}"] [data-flexsf="record-status"]')


async def bridge_frame(page: Page, origins: Origins) -> Frame:
    frame = next(f for f in page.frames if f.url.startswith(origins.flex.origin))
    await frame.wait_for_function("() => window.FlexStandIn && FlexStandIn.bridge")
    return frame


def flex_url(origins: Origins, gateway: str, allowed: str | None = None, extra: str = "") -> str:
    """The Flex page; `allowed` is the Flex configuration's `allowed_origins` (default: the Salesforce stand-in's)."""
    trusted = origins.salesforce.origin if allowed is None else allowed
    return desk_pages.flex_url(origins.flex.origin, gateway, trusted, extra)


@pytest.fixture
def gateway_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Gateway settings a test changes: `@pytest.mark.parametrize("gateway_env", [{...}], indirect=True)`."""
    return getattr(request, "param", {})


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(stack, origins: Origins, gateway_env: dict[str, str]) -> AsyncIterator[str]:
    async with serve(stack, FLEXSF_CORS_ORIGINS=origins.flex.origin, **gateway_env) as api:
        yield api.url


@pytest.fixture
def service_configuration(twilio_client) -> dict:
    """What Flex holds as `manager.serviceConfiguration`: the Flex Configuration, read from the Twilio sandbox."""
    config = twilio_client.flex_api.v1.configuration().fetch()
    return {"taskrouter_offline_activity_sid": config.taskrouter_offline_activity_sid}


@asynccontextmanager
async def open_desk(
    browser: Browser, gateway: str, origins: Origins, stack, service_configuration: dict, extra: str = ""
) -> AsyncIterator[Desk]:
    context = await browser.new_context(viewport={"width": 900, "height": 700})
    # The agent's Flex token, as manager.user.token holds it (never in a URL or a log).
    await context.add_init_script(
        f"window.__FLEXSF_TOKEN__ = {json.dumps(stack.tw.mint_token(AGENT.sid))};"
        f"window.__FLEXSF_SERVICE_CONFIGURATION__ = {json.dumps(service_configuration)};"
    )
    page = await context.new_page()
    await page.goto(
        f"{origins.salesforce.origin}/salesforce.html?flex={quote(flex_url(origins, gateway, extra=extra))}"
    )
    try:
        yield Desk(page, await bridge_frame(page, origins), origins)
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def desk(browser: Browser, gateway: str, origins: Origins, stack, service_configuration) -> AsyncIterator[Desk]:
    async with open_desk(browser, gateway, origins, stack, service_configuration) as opened:
        yield opened


# ---- the bridge against Flex UI's own declarations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declaration", "renamed", "complaint"),
    [
        pytest.param(
            '  | "notesSubmitted"', '  | "wrapupNotesSubmitted"', '"does not fit": "taskCanceled" | "notes', id="event"
        ),
        pytest.param(
            "  channelSid: string;", "  channelSID: string;", '"not declared by Flex": "channelSid"', id="notes"
        ),
        pytest.param("  taskSid: string;", "  taskId: string;", '"not declared by Flex": "taskSid"', id="task"),
        pytest.param(
            "  taskrouter_offline_activity_sid?:",
            "  offline_activity_sid?:",
            '"not declared by Flex": "taskrouter_offline_activity_sid"',
            id="offline-activity",
        ),
    ],
)
async def test_the_type_check_fails_when_flex_renames_what_the_bridge_reads(
    tmp_path: Path, declaration: str, renamed: str, complaint: str
):
    """flex-types/contract.ts against a copy of the extracted declarations with one name changed, as a Flex release
    that renamed it would extract."""
    tsc = BRIDGE / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.fail("agent-bridge/node_modules is missing: run `make bridge` (npm ci)")
    for part in ("src", "flex-types"):
        shutil.copytree(BRIDGE / part, tmp_path / part)
    shutil.copy(BRIDGE / "tsconfig.json", tmp_path)
    extract = tmp_path / "flex-types" / "flex-ui.d.ts"
    text = extract.read_text(encoding="utf-8")
    assert text.count(declaration) == 1
    check = [str(tsc), "-p", str(tmp_path / "tsconfig.json")]

    intact = await asyncio.to_thread(subprocess.run, check, capture_output=True, text=True)
    assert intact.returncode == 0, intact.stdout
    extract.write_text(text.replace(declaration, renamed), encoding="utf-8")
    broken = await asyncio.to_thread(subprocess.run, check, capture_output=True, text=True)
    assert broken.returncode != 0 and complaint in broken.stdout, broken.stdout


# ---- loading -------------------------------------------------------------------------------------------------------


async def test_embedded_it_loads_the_salesforce_scripts_once_hides_the_crm_and_enables_click_to_dial(desk: Desk):
    assert await desk.flex("() => [FlexStandIn.bridge.embedded, FlexStandIn.bridge.origin]") == [
        True,
        desk.origins.salesforce.origin,
    ]
    scripts = await desk.flex("() => [...document.scripts].map(s => s.src).filter(s => s.includes('/support/'))")
    assert scripts == [
        f"{desk.origins.salesforce.origin}/support/api/{API_VERSION}/lightning/opencti_min.js",
        f"{desk.origins.salesforce.origin}/support/console/{API_VERSION}/integration.js",
    ]
    assert await desk.flex_calls("manager.updateConfig") == [
        {"componentProps": {"AgentDesktopView": {"showPanel2": False}}}
    ]
    # The click listener only once Salesforce has enabled click-to-dial.
    assert await desk.flex("() => SforceStandIn.calls.map(c => c.api).filter(a => a.includes('ClickToDial'))") == [
        "opencti.enableClickToDial",
        "opencti.onClickToDial",
    ]
    assert await desk.flex("() => FlexStandIn.bridge.config.screen_pop") is True


async def test_when_salesforce_refuses_to_enable_click_to_dial_no_click_is_listened_to_and_the_agent_is_told(
    browser: Browser, gateway: str, origins: Origins, stack, service_configuration
):
    async with open_desk(
        browser, gateway, origins, stack, service_configuration, extra="&sfRefuse=enableClickToDial"
    ) as desk:
        assert len(await desk.sforce_calls("opencti.enableClickToDial")) == 1
        assert await desk.sforce_calls("opencti.onClickToDial") == []
        assert await desk.notices() == [
            "Click-to-dial is off: Salesforce did not enable it "
            "(The stand-in's Salesforce refused to enable click-to-dial)"
        ]
        with pytest.raises(Exception, match="no onClickToDial listener"):
            await desk.flex("(p) => SforceStandIn.clickToDial(p)", {"number": sf_demo.DEMO_LEAD.phone})
        assert await started_calls(desk) == []


async def test_not_embedded_it_does_nothing(browser: Browser, gateway: str, origins: Origins, stack):
    context = await browser.new_context()
    try:
        await context.add_init_script(f"window.__FLEXSF_TOKEN__ = {json.dumps(stack.tw.mint_token(AGENT.sid))};")
        page = await context.new_page()
        await page.goto(flex_url(origins, gateway))  # Flex on its own, not framed by Salesforce
        await page.wait_for_function("() => window.FlexStandIn && FlexStandIn.bridge")
        assert await page.evaluate("() => [FlexStandIn.bridge.embedded, FlexStandIn.bridge.config]") == [False, None]
        assert await page.evaluate("() => [...document.scripts].filter(s => s.src.includes('/support/')).length") == 0
        assert await page.evaluate("() => [FlexStandIn.calls.length, typeof window.sforce]") == [0, "undefined"]
    finally:
        await context.close()


# ---- whom the bridge trusts ----------------------------------------------------------------------------------------

# A gateway nobody listens on: a bridge that stays idle never calls it (if it did, its notice would say so).
NO_GATEWAY = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("framer", "allowed", "extra", "refusal"),
    [
        pytest.param("elsewhere", None, "", "{elsewhere} is not a configured Salesforce origin", id="unconfigured"),
        pytest.param(
            "elsewhere",
            None,
            "&sfdcIframeOrigin={salesforce}",
            "the page's Salesforce origin ({salesforce}) is not the page framing Flex ({elsewhere})",
            id="url-claims-a-trusted-origin",
        ),
        pytest.param(
            "salesforce",
            "",
            "",
            "no Salesforce origin is configured (salesforce_integration.allowed_origins)",
            id="none-configured",
        ),
        pytest.param(
            "salesforce",
            "https://*.lightning.force.com,{salesforce}/path",
            "",
            "no Salesforce origin is configured (salesforce_integration.allowed_origins)",
            id="wildcards-and-paths-match-nothing",
        ),
    ],
)
async def test_framed_by_an_origin_it_does_not_trust_it_loads_nothing_and_dials_nothing(
    browser: Browser, origins: Origins, framer: str, allowed: str | None, extra: str, refusal: str
):
    names = {"salesforce": origins.salesforce.origin, "elsewhere": origins.elsewhere.origin}
    url = flex_url(
        origins, NO_GATEWAY, None if allowed is None else allowed.format(**names), extra.format(**quoted(names))
    )
    context = await browser.new_context()
    try:
        await context.add_init_script("window.__FLEXSF_TOKEN__ = 'a-token';")
        page = await context.new_page()
        await page.goto(f"{getattr(origins, framer).origin}/salesforce.html?flex={quote(url)}")
        desk = Desk(page, await bridge_frame(page, origins), origins)
        assert await desk.flex("() => [FlexStandIn.bridge.embedded, FlexStandIn.bridge.refusal]") == [
            False,
            refusal.format(**names),
        ]
        assert await desk.notices() == [f"Salesforce integration off: {refusal.format(**names)}"]
        # No Salesforce script from anywhere, so no Open CTI and no click listener; nothing asked of the gateway.
        assert await desk.flex("() => [...document.scripts].filter(s => s.src.includes('/support/')).length") == 0
        assert await desk.flex("() => typeof window.sforce") == "undefined"
        assert await desk.flex_calls("Actions.invokeAction") == []
        assert not any(entry.startswith("notice: Salesforce integration unavailable") for entry in await desk.log())
    finally:
        await context.close()


def quoted(names: dict[str, str]) -> dict[str, str]:
    return {name: quote(value, safe="") for name, value in names.items()}


async def test_another_orgs_lightning_origin_is_not_trusted_without_being_configured(desk: Desk):
    """No `*.lightning.force.com` wildcard any more: any org's Lightning page would match it, an attacker's too."""
    sf = desk.origins.salesforce.origin
    checks = await desk.flex(
        "(sf) => [FlexsfBridge.isEmbedded(window, 'https://evil.lightning.force.com', [sf]),"
        " FlexsfBridge.isEmbedded(window, 'https://acme.lightning.force.com', 'https://acme.lightning.force.com/'),"
        " FlexsfBridge.isEmbedded(window, sf, [sf]),"
        " FlexsfBridge.trustedOrigins(['https://*.lightning.force.com', 'HTTPS://Acme.Lightning.Force.com/', 'nope'])]",
        sf,
    )
    assert checks == [False, True, True, ["https://acme.lightning.force.com"]]


# ---- screen pop and the record dropdown ----------------------------------------------------------------------------


async def test_accepting_a_single_match_task_pops_its_record_once(desk: Desk, stack):
    contact = sf_demo.UNIQUE_PHONE_CONTACT
    sid = stack.tw.lifecycle({"from": contact.phone}, worker_sid=AGENT.sid)["sid"]
    assert (await desk.accept(sid))["aborted"] is False
    assert await desk.sforce_calls("opencti.screenPop") == [{"type": "sobject", "params": {"recordId": contact.id}}]
    assert await desk.frame.locator(f'section[data-task-sid="{sid}"]').count() == 0  # one record: no dropdown

    await desk.accept(sid)
    assert len(await desk.sforce_calls("opencti.screenPop")) == 1


def asks_pop_of(request, sid: str) -> bool:
    """Whether a request is the bridge's pop long-poll for this task (`POST /agent/pop`, the sid in its body)."""
    return request.method == "POST" and request.url.endswith("/agent/pop") and f'"{sid}"' in (request.post_data or "")


def pop_asked(sid: str, wait_s: float = 25) -> str:
    """The pop's long-poll as `task_requests` records it."""
    return f"POST /agent/pop {json.dumps({'task_sid': sid, 'wait_s': wait_s}, sort_keys=True)}"


def task_requests(desk: Desk, sid: str) -> list[str]:
    """The bridge's requests about one task from now on (method and path; the body too of the pop's long-poll, which
    names the task there), as the browser sends them."""
    seen: list[str] = []

    def on_request(request) -> None:
        path = request.url.split("://", 1)[1].split("/", 1)[1]
        if asks_pop_of(request, sid):
            seen.append(f"{request.method} /{path} {json.dumps(request.post_data_json, sort_keys=True)}")
        elif f"/agent/tasks/{sid}" in request.url and request.method != "OPTIONS":
            seen.append(f"{request.method} /{path}")

    desk.page.on("request", on_request)
    return seen


async def test_the_pop_arrives_through_one_long_poll_not_polling(desk: Desk, stack):
    contact = sf_demo.UNIQUE_PHONE_CONTACT
    sid = stack.tw.lifecycle({"from": contact.phone}, worker_sid=AGENT.sid)["sid"]
    requests = task_requests(desk, sid)
    await desk.accept(sid)
    assert await desk.sforce_calls("opencti.screenPop") == [{"type": "sobject", "params": {"recordId": contact.id}}]
    # One question, answered once the workflow decided: no GET /agent/tasks/{sid} looks, no second ask.
    assert requests == [pop_asked(sid)]


async def test_a_bridge_that_asks_before_taskrouters_callback_still_gets_the_pop_in_one_request(desk: Desk, stack):
    contact = sf_demo.UNIQUE_PHONE_CONTACT
    sid = stack.tw.create_task({"from": contact.phone})["sid"]
    stack.tw.reserve(sid, AGENT.sid)
    requests = task_requests(desk, sid)
    asked = asyncio.Event()
    desk.page.on("request", lambda r: asked.set() if asks_pop_of(r, sid) else None)
    accepting = asyncio.ensure_future(desk.accept(sid))  # Flex's after-accept listener runs before TaskRouter tells us
    await asyncio.wait_for(asked.wait(), 30)
    assert not accepting.done() and await desk.sforce_calls("opencti.screenPop") == []
    stack.tw.accept(sid)  # now reservation.accepted is sent to the gateway
    assert (await asyncio.wait_for(accepting, 60))["aborted"] is False
    assert await desk.sforce_calls("opencti.screenPop") == [{"type": "sobject", "params": {"recordId": contact.id}}]
    assert requests == [pop_asked(sid)]


async def test_not_decided_yet_asks_again_at_once_until_the_pop_is_decided(
    browser: Browser, gateway: str, origins: Origins, stack, service_configuration
):
    contact = sf_demo.UNIQUE_PHONE_CONTACT
    async with open_desk(browser, gateway, origins, stack, service_configuration, extra="&longPollWaitS=1") as desk:
        sid = stack.tw.create_task({"from": contact.phone})["sid"]
        stack.tw.reserve(sid, AGENT.sid)
        requests = task_requests(desk, sid)
        answers: list[dict] = []

        async def on_response(response) -> None:
            if asks_pop_of(response.request, sid):
                answers.append(await response.json())

        desk.page.on("response", on_response)
        accepting = asyncio.ensure_future(desk.accept(sid))
        await eventually(lambda: len(answers) >= 2, what="two answers of 'not decided yet'")
        assert [a["decided"] for a in answers[:2]] == [False, False]
        stack.tw.accept(sid)
        assert (await asyncio.wait_for(accepting, 60))["aborted"] is False
        assert await desk.sforce_calls("opencti.screenPop") == [{"type": "sobject", "params": {"recordId": contact.id}}]
        assert set(requests) == {pop_asked(sid, wait_s=1)} and len(requests) >= 3
        assert not any("gave up" in line for line in await desk.log())


async def test_the_pop_arrives_through_the_long_poll_when_the_worker_restarts_during_the_wait(
    browser: Browser,
    origins: Origins,
    temporal_client,
    clean_salesforce_sandbox,
    fresh_twilio_sandbox,
    service_configuration,
):
    """The stack's worker, but one this test stops and replaces: the bridge asks, the worker goes away with the
    question accepted and the pop undecided, the agent's acceptance arrives, a new worker decides the pop."""
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    contact = sf_demo.UNIQUE_PHONE_CONTACT
    env = stack_env(sf.info, tw.info, f"stack-{uuid.uuid4()}")
    async with stack_gateway(temporal_client, env, tw) as events_gateway:
        with ThreadPoolExecutor(max_workers=16) as executor:
            activities, first = start_stack_worker(temporal_client, env, executor)
            stack = Stack(temporal_client, env["FLEXSF_TASK_QUEUE"], env, activities, sf, tw, events_gateway)
            async with serve(stack, FLEXSF_CORS_ORIGINS=origins.flex.origin) as api:
                async with open_desk(browser, api.url, origins, stack, service_configuration) as desk:
                    sid = tw.create_task({"from": contact.phone})["sid"]
                    tw.reserve(sid, AGENT.sid)
                    requests = task_requests(desk, sid)
                    async with first:
                        await stack.wait_for(sid, lambda v: v.stage == Stage.CREATED)
                        accepting = asyncio.ensure_future(desk.accept(sid))
                        # The question reached the workflow: it waits inside its update handler.
                        await eventually(lambda: pending_updates(temporal_client, sid), what="the pop update accepted")
                    tw.accept(sid)  # no worker now: the acceptance waits in the history
                    assert not accepting.done() and await desk.sforce_calls("opencti.screenPop") == []
                    _, second = start_stack_worker(temporal_client, env, executor)
                    async with second:
                        assert (await asyncio.wait_for(accepting, 60))["aborted"] is False
                    assert await desk.sforce_calls("opencti.screenPop") == [
                        {"type": "sobject", "params": {"recordId": contact.id}}
                    ]
                    assert requests and all(r.startswith("POST /agent/pop ") for r in requests), requests


async def preflights(api: Api) -> float:
    """The OPTIONS requests the gateway has answered, from its own metrics: a browser's CORS preflights (nothing
    else sends OPTIONS). The CORS middleware answers them before routing, so they count under no route."""
    exposition = (await api.http.get(api.metrics_url)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "flexsf_gateway_requests_total" and sample.labels["method"] == "OPTIONS"
    )


async def test_two_accepted_tasks_cost_at_most_one_cors_preflight_for_the_pop(
    browser: Browser, origins: Origins, stack, service_configuration
):
    """The gateway is another origin than Flex's and the pop carries the agent's token, so the browser preflights it;
    it caches a preflight per URL (for the gateway's Access-Control-Max-Age), so the pop's one URL pays it once for
    every task. A sid in the path made each task's URL new, and paid a preflight per pop."""
    contact = sf_demo.UNIQUE_PHONE_CONTACT
    async with serve(stack, FLEXSF_CORS_ORIGINS=origins.flex.origin) as api:
        async with open_desk(browser, api.url, origins, stack, service_configuration) as desk:
            first, second = (stack.tw.lifecycle({"from": contact.phone}, worker_sid=AGENT.sid)["sid"] for _ in range(2))
            requests = [task_requests(desk, first), task_requests(desk, second)]
            before = await preflights(api)  # the bridge's start-up call (its config) was preflighted
            await desk.accept(first)
            assert await preflights(api) == before + 1, "the first pop's URL was never called before: one preflight"
            await desk.accept(second)
            assert await preflights(api) == before + 1, "the second task's pop paid a preflight of its own"
            assert requests == [[pop_asked(first)], [pop_asked(second)]]
            popped = {"type": "sobject", "params": {"recordId": contact.id}}
            assert await desk.sforce_calls("opencti.screenPop") == [popped, popped]


async def pending_updates(client, sid: str) -> bool:
    """Whether the task's workflow has accepted an update it has not answered yet (the pop's long-poll)."""
    from temporalio.api.enums.v1 import EventType

    history = await client.get_workflow_handle(workflow_id(sid)).fetch_history()
    accepted = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
    done = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED]
    return len(accepted) > len(done)


async def test_several_matches_show_the_dropdown_block_completion_and_the_choice_is_logged(desk: Desk, stack):
    sid = stack.tw.lifecycle({"from": sf_demo.SHARED_PHONE}, worker_sid=AGENT.sid)["sid"]
    await desk.accept(sid)
    view = await stack.view(sid)
    assert view.stage == Stage.AWAITING_SELECTION and len(view.pop.search_term or "") >= 3
    assert await desk.sforce_calls("opencti.screenPop") == [
        {"type": "search", "params": {"searchString": view.pop.search_term}}
    ]

    dropdown = desk.dropdown(sid)
    labels = [c.label for c in view.pop.candidates]
    assert len(labels) == 3 and "Sam Kim - Lead" in labels
    assert await dropdown.locator("option:not([disabled])").all_inner_texts() == labels

    assert await desk.complete(sid) == {"aborted": True}
    assert any("before completing" in n for n in await desk.notices())

    chosen = sf_demo.SHARED_PHONE_RECORDS[2]
    await dropdown.select_option(chosen.id)
    await desk.status(sid).filter(has_text=f"Related to {chosen.name} - Lead").wait_for()
    assert (await stack.view(sid)).record.id == chosen.id
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "agent-bridge-dropdown.png"
    await desk.page.screenshot(path=str(shot))
    print(f"dropdown screenshot: {shot}")
    assert await desk.complete(sid) == {"aborted": False}

    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    result = await stack.result(sid)
    assert result.stage == Stage.LOGGED
    [logged] = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid]
    assert logged["WhoId"] == chosen.id


async def test_a_refresh_mid_task_restores_the_dropdown_and_does_not_pop_again(desk: Desk, stack):
    sid = stack.tw.lifecycle({"from": sf_demo.SHARED_PHONE}, worker_sid=AGENT.sid)["sid"]
    await desk.accept(sid)
    assert len(await desk.sforce_calls("opencti.screenPop")) == 1

    await desk.reload()
    dropdown = desk.dropdown(sid)
    await dropdown.wait_for()
    assert len(await dropdown.locator("option:not([disabled])").all_inner_texts()) == 3
    assert await desk.complete(sid) == {"aborted": True}  # still unchosen after the refresh
    await desk.accept(sid)  # whatever fires again, the task was popped already
    assert await desk.sforce_calls("opencti.screenPop") == []

    chosen = sf_demo.SHARED_PHONE_RECORDS[0]
    await dropdown.select_option(chosen.id)
    await desk.status(sid).filter(has_text="Related to").wait_for()
    await desk.reload()
    await desk.status(sid).filter(has_text=f"Related to {chosen.name}").wait_for()
    assert await desk.dropdown(sid).input_value() == chosen.id
    assert await desk.complete(sid) == {"aborted": False}


# A caller no demo record has: the search finds nothing.
UNKNOWN_PHONE = "+1 808 555 0142"


@pytest.mark.parametrize(
    ("gateway_env", "attributes", "popped"),
    [
        pytest.param(
            {},
            {"from": UNKNOWN_PHONE},
            [
                {
                    "type": "newRecord",
                    "params": {"entityName": "Contact", "defaultFieldValues": {"Phone": "+18085550142"}},
                }
            ],
            id="default-new-contact-with-the-phone",
        ),
        pytest.param(
            {"FLEXSF_SEARCH_NO_MATCH_POP": "new_record:Lead"},
            {"name": "Zelda Quimby", "from": UNKNOWN_PHONE},
            [
                {
                    "type": "newRecord",
                    "params": {"entityName": "Lead", "defaultFieldValues": {"LastName": "Zelda Quimby"}},
                }
            ],
            id="new-lead-with-the-name",
        ),
        pytest.param(
            {"FLEXSF_SEARCH_NO_MATCH_POP": "search"},
            {"from": UNKNOWN_PHONE},
            [{"type": "search", "params": {"searchString": "+18085550142"}}],
            id="search-page",
        ),
        pytest.param({"FLEXSF_SEARCH_NO_MATCH_POP": "none"}, {"from": UNKNOWN_PHONE}, [], id="nothing"),
    ],
    indirect=["gateway_env"],
)
async def test_a_search_that_finds_nobody_pops_what_the_no_match_setting_says(
    desk: Desk, stack, attributes: dict, popped: list
):
    sid = stack.tw.lifecycle(attributes, worker_sid=AGENT.sid)["sid"]
    await desk.accept(sid, {**attributes, "direction": "inbound"})
    view = await stack.view(sid)
    assert view.pop.search_term and view.pop.record is None and view.pop.candidates == []
    assert await desk.sforce_calls("opencti.screenPop") == popped
    await desk.accept(sid)  # once per task
    assert len(await desk.sforce_calls("opencti.screenPop")) == len(popped)


# ---- after the log -------------------------------------------------------------------------------------------------


async def test_once_the_log_is_written_salesforces_view_is_refreshed_once(desk: Desk, stack):
    sid = stack.tw.lifecycle({"from": sf_demo.UNIQUE_PHONE_CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await desk.accept(sid)
    assert await desk.complete(sid) == {"aborted": False}
    assert await desk.sforce_calls("opencti.refreshView") == []  # Flex completed it; TaskRouter has not told us yet

    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    logged = await stack.wait_for(sid, lambda v: v.activity_id is not None)
    await desk.frame.wait_for_function(
        "(sid) => FlexStandIn.log.includes(`task ${sid} is logged: Salesforce's view refreshed`)", arg=sid
    )
    assert await desk.sforce_calls("opencti.refreshView") == [{}]
    assert logged.stage == Stage.LOGGED
    await desk.reload()
    await desk.complete(sid)  # Complete again (a retried action, after a refresh): not refreshed twice
    await desk.frame.wait_for_function(
        "(sid) => FlexStandIn.log.includes(`task ${sid}: Salesforce's view was refreshed for its log already`)", arg=sid
    )
    assert await desk.sforce_calls("opencti.refreshView") == []  # the reloaded page's stand-in counts afresh


# ---- copilot notes -------------------------------------------------------------------------------------------------


def channel_sid(n: int) -> str:
    return f"CH{n:032x}"


async def accept_task(desk: Desk, stack, phone: str, **channel: str) -> str:
    """A task with channel identifiers in its attributes, accepted by the agent as Flex hands it to the bridge."""
    attributes = {"from": phone, "direction": "inbound", **channel}
    sid = stack.tw.lifecycle(attributes, worker_sid=AGENT.sid)["sid"]
    await desk.accept(sid, attributes)
    return sid


async def submit_notes(desk: Desk, **notes) -> None:
    """Flex's `notesSubmitted` (NotesSubmittedEventPayload), resolved once the bridge's listener is done."""
    payload = {"dispositionCode": {"disposition_code": "Callback", "topic_path": "Billing"}, "sentiment": "neutral"}
    await desk.flex("(n) => FlexStandIn.manager.events.emit('notesSubmitted', n)", {**payload, **notes})


async def test_copilot_notes_reach_the_workflow_of_the_task_with_their_channel_sid(desk: Desk, stack):
    first = await accept_task(desk, stack, sf_demo.UNIQUE_PHONE_CONTACT.phone, channelSid=channel_sid(1))
    second = await accept_task(desk, stack, sf_demo.UNIQUE_PHONE_ACCOUNT.phone, channelSid=channel_sid(2))
    await submit_notes(desk, channelSid=channel_sid(1), summary="Wants a callback")
    view = await stack.wait_for(first, lambda v: v.notes is not None)
    assert (view.notes.disposition, view.notes.summary, view.notes.topics, view.notes.sentiment) == (
        "Callback",
        "Wants a callback",
        ["Billing"],
        "neutral",
    )
    assert (await stack.view(second)).notes is None


async def test_after_a_refresh_notes_still_find_their_task_by_channel_and_interaction(desk: Desk, stack):
    conversation = "CH" + "c" * 32
    interaction = "KD" + "1" * 32
    first = await accept_task(desk, stack, sf_demo.UNIQUE_PHONE_CONTACT.phone, conversationSid=conversation)
    second = await accept_task(desk, stack, sf_demo.UNIQUE_PHONE_ACCOUNT.phone, flexInteractionSid=interaction)
    await desk.reload()  # the page's memory is gone; sessionStorage is not

    await submit_notes(desk, interactionSid=interaction, channelSid="UO" + "9" * 32, summary="Second")
    await submit_notes(desk, interactionSid="KD" + "2" * 32, channelSid=conversation, summary="First")
    assert (await stack.wait_for(second, lambda v: v.notes is not None)).notes.summary == "Second"
    assert (await stack.wait_for(first, lambda v: v.notes is not None)).notes.summary == "First"
    assert await desk.notices() == []


async def test_notes_that_match_no_accepted_task_are_reported_not_sent_to_the_only_task(desk: Desk, stack):
    sid = await accept_task(desk, stack, sf_demo.UNIQUE_PHONE_CONTACT.phone, channelSid=channel_sid(3))
    await desk.reload()
    warnings: list[str] = []
    desk.page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    await submit_notes(desk, channelSid=channel_sid(4), summary="Someone else's call")
    notice = "Copilot notes did not match a task accepted on this page: they were not saved to Salesforce"
    assert await desk.notices() == [notice]
    assert f"flexsf: {notice}" in warnings
    # The listener is done (emit resolved) and sent nothing: the one accepted task has no notes.
    assert (await stack.view(sid)).notes is None


# ---- click-to-dial and calls ---------------------------------------------------------------------------------------


async def test_click_to_dial_starts_an_outbound_call_for_the_record(desk: Desk):
    lead = sf_demo.DEMO_LEAD
    await desk.flex(
        "(p) => SforceStandIn.clickToDial(p)",
        {
            "number": lead.phone,
            "recordId": lead.id,
            "recordName": lead.name,
            "objectType": "Lead",
            "personAccount": False,
        },
    )
    [started] = [
        c["payload"] for c in await desk.flex_calls("Actions.invokeAction") if c["name"] == "StartOutboundCall"
    ]
    assert started == {
        "destination": "+16465550175",
        "taskAttributes": {"sfdcObjectId": lead.id, "sfdcObjectType": "Lead", "name": lead.name},
    }
    assert await desk.sforce_calls("opencti.setSoftphonePanelVisibility") == [{"visible": True}]


async def started_calls(desk: Desk) -> list:
    return [c for c in await desk.flex_calls("Actions.invokeAction") if c["name"] == "StartOutboundCall"]


@pytest.mark.parametrize(
    ("number", "notice"),
    [
        pytest.param("+1 900 555 0123", "Could not dial: calls to premium-rate numbers are not allowed", id="premium"),
        pytest.param(
            "+881 6 1234 5678", "Could not dial: calls to satellite numbers (+881) are not allowed", id="satellite"
        ),
        pytest.param("611", "Could not dial: calls to short codes are not allowed", id="short-code"),
        pytest.param(
            "+1" + "5" * 70, "Could not dial: number: String should have at most 64 characters", id="not-a-number"
        ),
    ],
)
async def test_a_refused_number_shows_the_gateways_reason_and_dials_nothing(desk: Desk, number: str, notice: str):
    await desk.flex("(p) => SforceStandIn.clickToDial(p)", {"number": number, "recordId": sf_demo.DEMO_LEAD.id})
    assert await desk.notices() == [notice]
    assert await started_calls(desk) == []
    assert await desk.sforce_calls("opencti.setSoftphonePanelVisibility") == []


async def test_a_click_once_the_page_claims_another_salesforce_origin_is_refused(desk: Desk):
    lead = {"number": sf_demo.DEMO_LEAD.phone, "recordId": sf_demo.DEMO_LEAD.id, "objectType": "Lead"}
    sf, elsewhere = desk.origins.salesforce.origin, desk.origins.elsewhere.origin
    original = await desk.flex("() => location.href")
    await desk.flex(
        "(origin) => history.replaceState(null, '', location.href + '&sfdcIframeOrigin=' + encodeURIComponent(origin))",
        elsewhere,
    )
    await desk.flex("(p) => SforceStandIn.clickToDial(p)", lead)
    assert await desk.notices() == [f"Could not dial: the click did not come from {sf}"]
    assert await started_calls(desk) == []

    await desk.flex("(url) => history.replaceState(null, '', url)", original)  # the trusted origin again: it dials
    await desk.flex("(p) => SforceStandIn.clickToDial(p)", lead)
    assert [c["payload"]["destination"] for c in await started_calls(desk)] == ["+16465550175"]


async def test_no_dialing_while_on_a_call_or_offline(desk: Desk):
    lead = {"number": sf_demo.DEMO_LEAD.phone, "recordId": sf_demo.DEMO_LEAD.id, "objectType": "Lead"}
    await desk.flex("() => { window.call = FlexStandIn.incomingCall(); }")
    await desk.flex("(p) => SforceStandIn.clickToDial(p)", lead)
    assert any("already on a call" in n for n in await desk.notices())

    await desk.flex("() => window.call.emit('disconnect')")
    # The workspace's offline activity, whatever it is called (here renamed), as Flex's configuration names it.
    offline = await desk.flex("() => FlexStandIn.manager.serviceConfiguration.taskrouter_offline_activity_sid")
    assert offline == tw_demo.DEMO_ACTIVITIES["Offline"]
    await desk.flex(
        "(sid) => { FlexStandIn.manager.workerClient.activity = {sid, name: 'Logged out', available: false}; }", offline
    )
    await desk.flex("(p) => SforceStandIn.clickToDial(p)", lead)
    assert await desk.notices() == [
        "You are already on a call: finish it before dialing another number",
        "You are Logged out: change your activity to dial",
    ]
    assert await started_calls(desk) == []

    # An activity merely named "Offline" is not the offline activity: the click dials.
    await desk.flex(
        "(sid) => { FlexStandIn.manager.workerClient.activity = {sid, name: 'Offline', available: false}; }",
        tw_demo.DEMO_ACTIVITIES["Break"],
    )
    await desk.flex("(p) => SforceStandIn.clickToDial(p)", lead)
    assert [c["payload"]["destination"] for c in await started_calls(desk)] == ["+16465550175"]


async def test_a_call_locks_the_pop_out_button_until_it_ends(desk: Desk):
    popoutable = lambda: desk.sforce_calls("console.setCustomConsoleComponentPopoutable")  # noqa: E731
    await desk.flex("() => { window.call = FlexStandIn.incomingCall(); }")
    assert await popoutable() == [{"popoutable": False}]
    await desk.flex("() => window.call.emit('disconnect')")
    assert await popoutable() == [{"popoutable": False}, {"popoutable": True}]
    await desk.flex("() => { window.call = FlexStandIn.incomingCall(); }")
    await desk.flex("() => window.call.emit('cancel')")
    assert await popoutable() == [{"popoutable": False}, {"popoutable": True}] * 2
