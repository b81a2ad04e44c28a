"""How many bytes of a request body the gateway reads, per route, in one place (enforced by `gateway.body_limit`).

A body over its route's limit is answered 413 while it streams in, before authentication and before parsing: a
declared `Content-Length` over the limit is refused before a byte is read, and one that lies (or is absent, as in a
chunked upload) is counted as the bytes arrive.

- TaskRouter's callback (`POST /taskrouter/events`, a form): 128 KiB. TaskRouter caps the attribute JSON of tasks
  and workers itself (twilio.com/docs/taskrouter/limits, "Resource configuration limits", whitespace included), and
  the gateway refuses either attributes document over 32 KiB of JSON once the signature is verified
  (`flexsf.task_events.MAX_ATTRIBUTES_BYTES`). A callback carries both documents percent-encoded (JSON's quotes,
  braces and colons take three bytes each: typically about twice the JSON) with some twenty short parameters, so
  128 KiB holds the largest callback the attributes' bound accepts. A refused real callback would cost its task the
  event until the sweep recovers it, so the bound is generous; it is there so a flood costs no memory.
- The copilot's notes (`POST /agent/tasks/{sid}/notes`, JSON): 192 KiB. `gateway.schemas.NotesIn` takes a 32,000
  character summary and twenty 100-character topics; as UTF-8 a character is up to 4 bytes (JSON.stringify does
  not escape them), so the largest valid body is about 140 KB.
- Agent Copilot's wrap-up notes webhook (`POST /copilot/notes`, JSON or a form): 320 KiB. It may carry two
  summaries (the agent's and the generated one), each taken up to 32,000 characters of up to 4 bytes, and some ten
  sids: about 260 KB. The page (twilio.com/docs/flex/developer/copilot-webhooks) documents no size of its own.
- Every other agent call (`PUT …/record`, `POST /agent/click-to-dial`; the GETs carry none): 8 KiB. Their largest
  valid bodies are under 2 KB.
- Anything else (health, docs, unknown paths): 8 KiB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KIB = 1024

TASKROUTER_CALLBACK_BYTES = 128 * KIB
AGENT_NOTES_BYTES = 192 * KIB
COPILOT_NOTES_BYTES = 320 * KIB
AGENT_BYTES = 8 * KIB
DEFAULT_BYTES = 8 * KIB


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a body may have on the routes whose path matches `path` (None: every other path)."""

    name: str
    max_bytes: int
    path: re.Pattern[str] | None = None


TASKROUTER = BodyLimit("taskrouter", TASKROUTER_CALLBACK_BYTES, re.compile(r"/taskrouter/events/?"))
AGENT_NOTES = BodyLimit("agent_notes", AGENT_NOTES_BYTES, re.compile(r"/agent/tasks/[^/]*/notes/?"))
COPILOT_NOTES = BodyLimit("copilot_notes", COPILOT_NOTES_BYTES, re.compile(r"/copilot/notes/?"))
AGENT = BodyLimit("agent", AGENT_BYTES, re.compile(r"/agent(?:/.*)?"))
DEFAULT = BodyLimit("default", DEFAULT_BYTES)

LIMITS: tuple[BodyLimit, ...] = (TASKROUTER, AGENT_NOTES, COPILOT_NOTES, AGENT)


def limit_for(path: str) -> BodyLimit:
    """The limit of the route a path would reach (the first match; a path of no route gets the default)."""
    for limit in LIMITS:
        if limit.path is not None and limit.path.fullmatch(path):
            return limit
    return DEFAULT
