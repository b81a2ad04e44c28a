"""Delivers TaskRouter event callbacks, signed the way Twilio signs them, from background threads.

Events of one task are delivered one at a time in event order; different tasks are delivered in parallel.
Faults (drop, duplicate, reorder, delay, retry) are applied here, and every attempt is recorded so tests can
assert on what the receiver was sent and what it answered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from twilio.request_validator import RequestValidator

from sandboxes.twilio.faults import Faults
from sandboxes.twilio.state import Event

log = logging.getLogger("sandboxes.twilio.callbacks")

USER_AGENT = "TwilioProxy/1.1"


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt (or one dropped event, `outcome == "dropped"`, `attempt == 0`)."""

    event_sid: str
    event_type: str
    task_sid: str | None
    url: str
    attempt: int
    outcome: str  # delivered (2xx) | failed (other status) | error (no answer: timeout, refused) | dropped
    status: int | None
    duplicate: bool = False
    error: str | None = None
    at_ms: int = 0
    params: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass
class _Job:
    event: Event
    url: str
    duplicate: bool
    generation: int
    params: dict[str, str]  # what is posted (and signed): the event's parameters less any the faults omit


def _url_for_log(url: str) -> str:
    # Callback URLs sometimes carry credentials in the query string; never log more than scheme, host and path.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class CallbackDispatcher:
    def __init__(self, auth_token: str, faults: Faults, workers: int = 8) -> None:
        self._validator = RequestValidator(auth_token)
        self._faults = faults
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queues: dict[str, deque[_Job]] = {}
        self._active: set[str] = set()  # keys queued in _ready or being delivered
        self._held: dict[str, list[_Job]] = {}  # reorder buffers, per task
        self._ready: queue.Queue[str | None] = queue.Queue()
        self._outstanding = 0
        self._generation = 0
        self._deliveries: list[Delivery] = []
        self._local = threading.local()
        self._threads = [
            threading.Thread(target=self._run, name=f"twilio-sandbox-callbacks-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._ready.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    # ----- called by the state, under its lock: must not block -----

    def submit(self, event: Event, url: str) -> None:
        cfg = self._faults.config
        if (
            self._faults.drops_every_callback_of(event.task_sid)
            or event.event_type in cfg.callback_drop_event_types
            or self._faults.roll(cfg.callback_drop_fraction)
        ):
            with self._lock:
                self._deliveries.append(
                    Delivery(
                        event.sid,
                        event.event_type,
                        event.task_sid,
                        url,
                        0,
                        "dropped",
                        None,
                        at_ms=int(time.time() * 1000),
                        params=event.params,
                    )
                )
            return
        params = {k: v for k, v in event.params.items() if k not in cfg.callback_omit_params}
        with self._lock:
            jobs = [_Job(event, url, False, self._generation, params)]
            if event.event_type in cfg.callback_duplicate_event_types or self._faults.roll(
                cfg.callback_duplicate_fraction
            ):
                jobs.append(_Job(event, url, True, self._generation, params))
            key = event.task_sid or event.sid
            self._outstanding += len(jobs)
            if cfg.callback_reorder == "none":
                self._enqueue_locked(key, jobs)
                return
            buffer = self._held.setdefault(key, [])
            starts_window = not buffer
            buffer.extend(jobs)
            window = 2 if cfg.callback_reorder == "swap_pairs" else max(2, cfg.callback_reorder_window)
            while len(buffer) >= window:
                # A fresh list per window, so a flush timer armed for an earlier window finds nothing to do.
                self._held[key] = rest = buffer[window:]
                self._enqueue_locked(key, self._reorder(buffer[:window], cfg.callback_reorder))
                buffer, starts_window = rest, True
            if buffer and starts_window:
                # Release a partly filled window in order if no partner event arrives in time.
                timer = threading.Timer(cfg.callback_reorder_flush_s, self._flush, (key, buffer))
                timer.daemon = True
                timer.start()

    def _reorder(self, batch: list[_Job], mode: str) -> list[_Job]:
        if mode == "swap_pairs":
            return batch[::-1]
        shuffled = list(batch)
        self._faults.shuffle(shuffled)
        if [id(j) for j in shuffled] == [id(j) for j in batch]:
            shuffled = shuffled[1:] + shuffled[:1]  # "shuffle" promises a different order
        return shuffled

    def _flush(self, key: str, buffer: list[_Job]) -> None:
        with self._lock:
            if self._held.get(key) is buffer and buffer:
                del self._held[key]
                self._enqueue_locked(key, buffer)

    def _enqueue_locked(self, key: str, jobs: list[_Job]) -> None:
        self._queues.setdefault(key, deque()).extend(jobs)
        if key not in self._active:
            self._active.add(key)
            self._ready.put(key)

    # ----- worker threads -----

    def _run(self) -> None:
        while True:
            key = self._ready.get()
            if key is None:
                return
            with self._lock:
                pending = self._queues.get(key)
                job = pending.popleft() if pending else None
            if job is not None:
                try:
                    self._deliver(job)
                except Exception:  # a bug here must not kill the dispatcher thread
                    log.exception("callback delivery crashed")
            with self._lock:
                if job is not None and job.generation == self._generation:
                    self._outstanding -= 1
                pending = self._queues.get(key)
                if pending:
                    self._ready.put(key)
                else:
                    self._queues.pop(key, None)
                    self._active.discard(key)
                if self._outstanding == 0:
                    self._idle.notify_all()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _deliver(self, job: _Job) -> None:
        cfg = self._faults.config
        if cfg.callback_delay_s > 0:
            time.sleep(cfg.callback_delay_s)
        params = job.params
        headers = {
            "X-Twilio-Signature": self._validator.compute_signature(job.url, params),
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": USER_AGENT,
        }
        attempts = max(1, cfg.callback_attempts)
        for attempt in range(1, attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                response = self._session().post(
                    job.url, data=params, headers=headers, timeout=cfg.callback_timeout_s, allow_redirects=False
                )
                status = response.status_code
            except requests.RequestException as exc:
                error = type(exc).__name__
            outcome = "error" if status is None else ("delivered" if 200 <= status < 300 else "failed")
            log.info(
                "callback %s %s -> %s %s",
                job.event.event_type,
                _url_for_log(job.url),
                status or error,
                "(duplicate)" if job.duplicate else "",
            )
            with self._lock:
                if job.generation == self._generation:
                    self._deliveries.append(
                        Delivery(
                            job.event.sid,
                            job.event.event_type,
                            job.event.task_sid,
                            job.url,
                            attempt,
                            outcome,
                            status,
                            job.duplicate,
                            error,
                            int(time.time() * 1000),
                            params,
                        )
                    )
            if outcome == "delivered" or attempt == attempts:
                return
            time.sleep(cfg.callback_backoff_s * 2 ** (attempt - 1))

    # ----- inspection -----

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_idle(self, timeout: float = 10.0) -> None:
        with self._idle:
            if not self._idle.wait_for(lambda: self._outstanding == 0, timeout=timeout):
                raise TimeoutError(f"{self._outstanding} callbacks still pending after {timeout}s")

    def reset(self) -> None:
        """Forget recorded deliveries and drop everything not yet sent; an attempt in flight is not recorded."""
        with self._lock:
            self._generation += 1
            self._deliveries.clear()
            self._held.clear()
            for pending in self._queues.values():
                pending.clear()
            self._outstanding = 0
            self._idle.notify_all()
