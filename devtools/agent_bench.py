"""`flexsf bench`'s agent-felt pop: from the agent's accept to Open CTI's `screenPop` being called, in the real bridge.

Each demo agent has a desk: a browser context in headless Chromium with Salesforce's page framing Flex's, the built
bridge running in the Flex frame against the bench's gateway (devtools/agent_desk.py, the pages the bridge's browser
tests use). A task is accepted as Flex accepts it: TaskRouter's reservation is accepted (the Twilio sandbox then sends
`reservation.accepted` to the gateway), then Flex's `AcceptTask` action runs its after-listeners, the bridge's among
them, which asks the gateway for the pop and calls `screenPop`. The Open CTI stand-in notes when it was called.

The figure is accept → `screenPop` called, minus the time spent inside the sandboxes' handlers for that task's calls
in between (its Salesforce search, told apart by the caller's own number, and its Twilio calls, by task sid): what a
real Salesforce and Twilio would add, and what the original browser plugin pays too. Measured one task at a time
(`agent_pop_single_*`) and with 20 accepts spread over one second across the agents (`agent_pop_*`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devtools import agent_desk
from sandboxes.twilio import demo as tw_demo

if TYPE_CHECKING:
    from devtools.bench import Bench

# Callers of their own, one Contact each, apart from the numbers the other phases use.
PHONE_PREFIX = "+1503555"
ACCEPT_WINDOW_S = 1.0
DESK_READY_S = 60.0


@dataclass
class Desk:
    worker_sid: str
    context: Any
    frame: Any

    async def accept(self, sid: str) -> dict:
        """Flex's AcceptTask action, resolved once every after-listener (the bridge's pop) is done."""
        return await self.frame.evaluate(
            "(sid) => FlexStandIn.flex.Actions.invokeAction('AcceptTask', "
            "{task: {taskSid: sid, attributes: {direction: 'inbound'}}})",
            sid,
        )

    async def pops(self) -> list[tuple[str, float]]:
        """(record id, wall time in s) of every screenPop this desk's Open CTI stand-in was asked for."""
        calls = await self.frame.evaluate(
            "() => SforceStandIn.calls.filter(c => c.api === 'opencti.screenPop')"
            ".map(c => [c.args.params && c.args.params.recordId, c.at])"
        )
        return [(record_id, at / 1000) for record_id, at in calls]

    async def take_fetches(self, path_part: str) -> list[tuple[str, float, float]]:
        """(URL, start, end) in wall seconds of the page's requests since the last take whose URL contains
        `path_part`, from the browser's Resource Timing entries (a cross-origin request without Timing-Allow-Origin
        still has its start and end); the entries are cleared, so the next take sees only newer requests."""
        entries = await self.frame.evaluate(
            "(part) => { const taken = performance.getEntriesByType('resource').filter(e => e.name.includes(part))"
            ".map(e => [e.name, performance.timeOrigin + e.startTime, performance.timeOrigin + e.responseEnd]);"
            " performance.clearResourceTimings(); return taken; }",
            path_part,
        )
        return [(url, start / 1000, end / 1000) for url, start, end in entries]

    async def log(self) -> list[str]:
        return await self.frame.evaluate("() => FlexStandIn.log")


class Origins:
    """The Flex and Salesforce origins the desks load their pages from. Started before the stack: the gateway's CORS
    origins name the Flex one."""

    def __init__(self) -> None:
        self.flex = agent_desk.StaticServer()
        self.salesforce = agent_desk.StaticServer()

    def close(self) -> None:
        self.flex.close()
        self.salesforce.close()


@asynccontextmanager
async def desks(origins: Origins, gateway_url: str, tw) -> AsyncIterator[list[Desk]]:
    """A desk per demo agent, each its own browser context (its own connections, as separate agents' browsers)."""
    from playwright.async_api import async_playwright

    # The Flex configuration's offline activity, as Flex hands it to the bridge (the sandbox's is the demo one).
    offline = tw_demo.DEMO_ACTIVITIES["Offline"]
    flex = agent_desk.flex_url(origins.flex.origin, gateway_url, origins.salesforce.origin)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=agent_desk.CHROMIUM, headless=True, args=agent_desk.CHROMIUM_FLAGS
        )
        try:
            opened: list[Desk] = []
            for worker in tw_demo.DEMO_WORKERS:
                context = await browser.new_context()
                await context.add_init_script(
                    f"window.__FLEXSF_TOKEN__ = {json.dumps(tw.mint_token(worker.sid))};"
                    "window.__FLEXSF_SERVICE_CONFIGURATION__ = "
                    f"{json.dumps({'taskrouter_offline_activity_sid': offline})};"
                )
                page = await context.new_page()
                await page.goto(agent_desk.salesforce_url(origins.salesforce.origin, flex))
                frame = next(f for f in page.frames if f.url.startswith(origins.flex.origin))
                await frame.wait_for_function(
                    "() => window.FlexStandIn && FlexStandIn.bridge", timeout=DESK_READY_S * 1000
                )
                if not await frame.evaluate("() => FlexStandIn.bridge.embedded && !!FlexStandIn.bridge.config"):
                    log = await frame.evaluate("() => FlexStandIn.log")
                    raise RuntimeError(f"the bridge did not start for {worker.name}: {log}")
                opened.append(Desk(worker.sid, context, frame))
            yield opened
        finally:
            await browser.close()


class AgentPop:
    def __init__(self, bench: Bench, origins: Origins) -> None:
        self.bench = bench
        self.origins = origins
        self.tw = bench.tw

    def _contacts(self, n: int) -> list[tuple[str, str]]:
        """(phone, Contact id) pairs: one caller per task, so each search and each pop is told apart."""
        from flexsf.salesforce_client import connect

        sf = connect(self.bench.stack.sf.credentials())
        made = []
        for i in range(n):
            phone = f"{PHONE_PREFIX}{i:04d}"
            made.append(
                (phone, sf.Contact.create({"LastName": f"Agent {self.bench.run_id} {i}", "Phone": phone})["id"])
            )
        return made

    async def _waiting(self, desk: Desk, phone: str) -> str:
        """A task offered to the desk's agent, its workflow started and idle: an agent about to click Accept."""
        sid = (await self.bench._tw(self.tw.create_task, {"from": phone, "direction": "inbound"}))["sid"]
        await self.bench._tw(self.tw.reserve, sid, desk.worker_sid)
        await self.bench._idle(sid)
        return sid

    async def _accept(self, desk: Desk, sid: str, at: float | None = None) -> tuple[float, asyncio.Future]:
        if at is not None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))  # pacing the accepts over the window
        clicked = time.time()
        await self.bench._tw(self.tw.accept, sid)  # Flex accepts the reservation first, then runs after-listeners
        return clicked, asyncio.ensure_future(desk.accept(sid))

    async def _measure(
        self, batch: list[tuple[Desk, str, str, str]], window_s: float, stages: dict[str, list[float]]
    ) -> list[float]:
        """Accept every (desk, sid, phone, contact id) of the batch, spread over `window_s`; ms per task. Where the
        time went goes to `stages`: until the bridge's request left, the request (CORS preflight, the gateway, the
        workflow's decision, minus the sandboxes' time), and from its answer to `screenPop`."""
        start = time.monotonic()
        step = window_s / len(batch) if len(batch) > 1 else 0.0
        accepted = await asyncio.gather(
            *(self._accept(desk, sid, start + i * step) for i, (desk, sid, _, _) in enumerate(batch))
        )
        await asyncio.gather(*(future for _, future in accepted))
        popped: dict[str, float] = {}
        requests: dict[str, tuple[float, float]] = {}
        for desk in {id(d): d for d, *_ in batch}.values():
            for record_id, at in await desk.pops():
                popped.setdefault(record_id, at)
            # The pop's URL names no task (one URL, so the browser's preflight is cached): a desk's requests follow
            # its accepts in order. Where a desk asked more than once for a task, its stages are left out.
            mine = sorted(
                (clicked, sid) for (clicked, _), (d, sid, _, _) in zip(accepted, batch, strict=True) if d is desk
            )
            asked = sorted((start, end) for _, start, end in await desk.take_fetches("/agent/pop"))
            if len(asked) == len(mine):
                requests.update((sid, timing) for (_, sid), timing in zip(mine, asked, strict=True))
        samples = []
        for (clicked, _), (desk, sid, phone, contact) in zip(accepted, batch, strict=True):
            if contact not in popped:
                raise RuntimeError(
                    f"task {sid} was accepted but not popped; the bridge said: {(await desk.log())[-3:]}"
                )
            at = popped[contact]
            inside = self.bench.observer.sandbox_seconds(sid, re.sub(r"\D", "", phone)[-10:], clicked, at)
            samples.append((at - clicked - inside) * 1000)
            if sid in requests:
                start, end = requests[sid]
                stages["accept_until_request_sent"].append((start - clicked) * 1000)
                stages["request_until_answered"].append((end - start - inside) * 1000)
                stages["answer_until_screen_pop"].append((at - end) * 1000)
        await asyncio.gather(*(self.bench.finish(sid) for _, sid, _, _ in batch))
        return samples

    async def run(self, single: int, concurrent: int) -> dict[str, Any]:
        from devtools.bench import _pct

        logins = self.bench.stack.sf.counters().get("logins", 0)
        # A caller of its own for every task of both runs: a pop is recognised by its record.
        contacts = await asyncio.to_thread(self._contacts, single + concurrent)
        self.bench.own_logins += self.bench.stack.sf.counters().get("logins", 0) - logins
        advance = self.bench.bars.add("screen pop, agent-felt", single + 1)
        async with desks(self.origins, self.bench.stack.gateway_url, self.tw) as opened:
            alone: list[float] = []
            alone_stages: dict[str, list[float]] = defaultdict(list)
            stages: dict[str, list[float]] = defaultdict(list)
            for i in range(single):
                desk = opened[i % len(opened)]
                phone, contact = contacts[i]
                sid = await self._waiting(desk, phone)
                alone += await self._measure([(desk, sid, phone, contact)], 0.0, alone_stages)
                advance()
            planned = [(opened[i % len(opened)], *contacts[single + i]) for i in range(concurrent)]
            sids = await asyncio.gather(*(self._waiting(desk, phone) for desk, phone, _ in planned))
            together = await self._measure(
                [(desk, sid, phone, contact) for (desk, phone, contact), sid in zip(planned, sids, strict=True)],
                ACCEPT_WINDOW_S,
                stages,
            )
            advance()
            self.bench.progress(f"agent pop: {concurrent} accepted within {ACCEPT_WINDOW_S:.0f} s")
        alone.sort()
        together.sort()
        return {
            "agent_pop_p50_ms": round(_pct(together, 50), 1),
            "agent_pop_p99_ms": round(_pct(together, 99), 1),
            "agent_pop_single_p50_ms": round(_pct(alone, 50), 1),
            "agent_pop_samples": len(together),
            "agent_pop_agents": len(tw_demo.DEMO_WORKERS),
            "agent_pop_stages_p50_ms": {k: round(_pct(sorted(v), 50), 1) for k, v in stages.items()},
            "agent_pop_stages_single_p50_ms": {k: round(_pct(sorted(v), 50), 1) for k, v in alone_stages.items()},
            "samples_ms": {
                "agent_pop": [round(v, 1) for v in together],
                "agent_pop_single": [round(v, 1) for v in alone],
            },
        }
