"""Payload encryption: the AES-GCM codec, key configuration (the environment or a key file) and rotation, an
encrypted task end to end (its raw history holds no caller name, phone number or notes), and the codec server the
Temporal UI calls: on a port of its own, never the gateway's, for callers with its token only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devtools.netutil import free_port, wait_for_port
from flexsf.codec import KEY_ID_METADATA, AesGcmCodec, PayloadDecryptionError, generate_key, parse_keys
from flexsf.delivery import signal_notes
from flexsf.models import Notes, Stage
from flexsf.settings import ConfigurationError, load_settings
from flexsf.temporal_client import data_converter
from flexsf.vocabulary import workflow_id
from gateway.codec_server import MAX_BODY_BYTES, create_codec_app
from gateway.codec_server import PREFIX as CODEC_PREFIX
from gateway.server import start_gateway, stop_gateway
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import (
    Stack,
    gateway_settings,
    history_once_completed,
    run_gateway,
    settings_from,
    stack_env,
    stack_gateway,
    start_stack_worker,
)
from tests.test_dev_stack import clean_env

OLD_KEY, NEW_KEY = generate_key(), generate_key()
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
SUMMARY = "Asked to move her appointment to Thursday"
UI_ORIGIN = "http://localhost:8233"
JSON = "application/json"
FLEXSF = Path(sys.executable).parent / "flexsf"


def codec(keys: str) -> AesGcmCodec:
    return AesGcmCodec(parse_keys(keys))


def plain_payloads(*values) -> list[Payload]:
    return pydantic_data_converter.payload_converter.to_payloads(list(values))


# --- the codec --------------------------------------------------------------------------------------------------


async def test_round_trip_encrypts_under_the_current_key_and_restores_the_payloads() -> None:
    c = codec(f"k1:{OLD_KEY}")
    originals = plain_payloads({"from": CONTACT.phone, "name": CONTACT.name}, Notes(summary=SUMMARY))
    encoded = await c.encode(originals)
    assert len(encoded) == 2
    for payload in encoded:
        assert payload.metadata["encoding"] == b"binary/encrypted"
        assert payload.metadata[KEY_ID_METADATA] == b"k1"
        assert CONTACT.name.encode() not in payload.data and SUMMARY.encode() not in payload.data
    assert encoded[0].data != (await c.encode(originals[:1]))[0].data  # a fresh nonce every time
    assert await c.decode(encoded) == originals


async def test_rotation_keeps_old_payloads_readable_and_encrypts_new_ones_with_the_new_key() -> None:
    before = await codec(f"old:{OLD_KEY}").encode(plain_payloads("written before the rotation"))
    rotated = codec(f"new:{NEW_KEY}, old:{OLD_KEY}")
    assert await rotated.decode(before) == plain_payloads("written before the rotation")
    after = await rotated.encode(plain_payloads("written after"))
    assert after[0].metadata[KEY_ID_METADATA] == b"new"
    assert await rotated.decode(after) == plain_payloads("written after")
    # Both generations in one batch, as in a history that spans the rotation.
    assert await rotated.decode([*before, *after]) == plain_payloads("written before the rotation", "written after")


async def test_unknown_key_id_names_the_payloads_key_id_and_never_a_key_or_the_configured_ids() -> None:
    encoded = await codec(f"retired:{OLD_KEY}").encode(plain_payloads("x"))
    with pytest.raises(PayloadDecryptionError, match="unknown key id 'retired'") as info:
        await codec(f"current:{NEW_KEY},older:{OLD_KEY}").decode(encoded)
    assert NEW_KEY not in str(info.value) and OLD_KEY not in str(info.value)
    assert "current" not in str(info.value) and "older" not in str(info.value)


async def test_a_tampered_payload_or_the_wrong_key_under_the_same_id_is_refused() -> None:
    [payload] = await codec(f"k:{OLD_KEY}").encode(plain_payloads("x"))
    tampered = Payload(metadata=payload.metadata, data=payload.data[:-1] + bytes([payload.data[-1] ^ 1]))
    with pytest.raises(PayloadDecryptionError, match="does not decrypt with key 'k'"):
        await codec(f"k:{OLD_KEY}").decode([tampered])
    with pytest.raises(PayloadDecryptionError, match="does not decrypt with key 'k'"):
        await codec(f"k:{NEW_KEY}").decode([payload])
    with pytest.raises(PayloadDecryptionError):
        await codec(f"k:{OLD_KEY}").decode([Payload(metadata=payload.metadata, data=b"short")])


async def test_unencrypted_payloads_pass_through_decode() -> None:
    originals = plain_payloads("written before encryption was turned on")
    assert await codec(f"k:{OLD_KEY}").decode(originals) == originals


# --- configuration ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, message",
    [
        (OLD_KEY, "entry 1 is not keyid:base64key"),
        (f"a:{OLD_KEY},{NEW_KEY}", "entry 2 is not keyid:base64key"),
        (f"a:{OLD_KEY[:-2]}", "key 'a' is not valid base64"),
        (f"a:{base64.b64encode(os.urandom(16)).decode()}", "key 'a' is 16 bytes; AES-256 needs 32"),
        (f"a:{OLD_KEY},a:{NEW_KEY}", "key id 'a' appears twice"),
        (f"a b:{OLD_KEY}", "entry 1: a key id is"),
        (",", "no key given"),
    ],
    ids=["no-id", "second-no-id", "bad-base64", "short", "duplicate-id", "bad-id", "empty"],
)
def test_bad_keys_are_refused_at_start_with_a_message_that_never_echoes_a_key(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(_env_file=None, flexsf_encryption_keys=value)
    text = str(info.value)
    assert "FLEXSF_ENCRYPTION_KEYS" in text and message in text
    assert OLD_KEY not in text and NEW_KEY not in text and OLD_KEY[:-2] not in text


def test_keys_settings_and_the_converter() -> None:
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(NEW_KEY)).decode()
    settings = load_settings(_env_file=None, flexsf_encryption_keys=f" new:{urlsafe} , old:{OLD_KEY} ")
    keys = settings.encryption_keys()
    assert keys.ids == ["new", "old"] and keys.current_id == "new"
    assert keys.keys["new"] == base64.b64decode(NEW_KEY)
    assert NEW_KEY not in repr(keys) and NEW_KEY not in repr(settings) and urlsafe not in repr(settings)
    assert isinstance(data_converter(settings).payload_codec, AesGcmCodec)
    plain = load_settings(_env_file=None, flexsf_encryption_keys="")
    assert plain.flexsf_encryption_keys is None and data_converter(plain) is pydantic_data_converter


# --- an encrypted task end to end ------------------------------------------------------------------------------


# Markers Temporal's SDK core records, and the details it writes itself: a `workflow.patched` decision.
SDK_MARKER_DETAILS = {"core_patch": {"patch-data"}}


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every `Payload` inside a proto message (inputs, results, headers, memos, failure details …) except search
    attributes: those the server indexes, so no codec touches them (ours hold ids only: workflows/search_attributes);
    and patch markers, which hold only a patch id."""
    if isinstance(message, Payload):
        yield message
        return
    if isinstance(message, MarkerRecordedEventAttributes) and message.marker_name in SDK_MARKER_DETAILS:
        # The SDK's own bookkeeping (a patch id) is written by the SDK, never through the data converter.
        for name, payloads in message.details.items():
            if name not in SDK_MARKER_DETAILS[message.marker_name]:
                yield from payloads.payloads
        if message.HasField("failure"):
            yield from payloads_in(message.failure)
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE or field.name == "search_attributes":
            continue
        if field.message_type.GetOptions().map_entry:
            values = value.values()
            if field.message_type.fields_by_name["value"].type != field.TYPE_MESSAGE:
                continue
        elif field.is_repeated:
            values = value
        else:
            values = [value]
        for item in values:
            yield from payloads_in(item)


@pytest_asyncio.fixture(loop_scope="session")
async def encrypted_stack(temporal_server, clean_salesforce_sandbox, fresh_twilio_sandbox) -> AsyncIterator[Stack]:
    """The `stack` fixture's product, but its client, gateway and worker all encrypt with FLEXSF_ENCRYPTION_KEYS."""
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"encrypted-{uuid.uuid4()}"
    env = stack_env(
        sf.info,
        tw.info,
        task_queue,
        FLEXSF_NOTES_GRACE_S="60",
        FLEXSF_ENCRYPTION_KEYS=f"current:{NEW_KEY},previous:{OLD_KEY}",
        FLEXSF_CORS_ORIGINS="https://flex.twilio.com",
    )
    client = await Client.connect(
        temporal_server.address, namespace=temporal_server.namespace, data_converter=data_converter(settings_from(env))
    )
    async with stack_gateway(client, env, tw) as gateway:
        with ThreadPoolExecutor(max_workers=16) as executor:
            activities, worker = start_stack_worker(client, env, executor)
            async with worker:
                yield Stack(client, task_queue, env, activities, sf, tw, gateway)


@pytest.fixture
def gateway(encrypted_stack: Stack) -> str:
    """The stack's gateway: encryption on (and CORS for the Flex UI), over real HTTP."""
    return encrypted_stack.gateway.url


@dataclass
class CodecServer:
    url: str  # …/codec, as the UI is given it
    token: str
    http: httpx.AsyncClient
    app: object

    def auth(self, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **headers}

    async def post(self, path: str, body: dict | None = None, **kw) -> httpx.Response:
        return await self.http.post(f"{self.url}/{path}", json=body, headers=self.auth(**kw.pop("headers", {})), **kw)


@pytest_asyncio.fixture(loop_scope="session")
async def codec_server() -> AsyncIterator[CodecServer]:
    """`gateway.codec_server` with the encrypted stack's keys and a token, on a loopback port of its own."""
    token = secrets.token_urlsafe(32)
    settings = settings_from(
        {
            "FLEXSF_ENCRYPTION_KEYS": f"current:{NEW_KEY},previous:{OLD_KEY}",
            "FLEXSF_CODEC_TOKEN": token,
            "FLEXSF_CODEC_CORS_ORIGINS": UI_ORIGIN,
        }
    )
    port = free_port()
    app = create_codec_app(settings)
    server, task = await start_gateway(app, "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            yield CodecServer(f"http://127.0.0.1:{port}{CODEC_PREFIX}", token, http, app)
    finally:
        await stop_gateway(server, task)


def as_json(payloads) -> dict:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def from_json(body: dict) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in body.get("payloads", [])]


async def test_an_encrypted_task_works_and_its_raw_history_holds_no_caller_data(
    encrypted_stack: Stack, gateway: str, codec_server: CodecServer, temporal_server
) -> None:
    stack = encrypted_stack
    sid = stack.tw.lifecycle(
        {"from": CONTACT.phone, "customerName": CONTACT.name}, worker_sid=tw_demo.DEMO_WORKERS[0].sid
    )["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == CONTACT.id
    await signal_notes(stack.client, sid, Notes(disposition="Callback", summary=SUMMARY))
    await stack.wait_for(sid, lambda v: v.notes is not None)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.LOGGED)
    [logged] = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid]
    assert logged["WhoId"] == CONTACT.id and logged["Description"] == SUMMARY

    # The history as Temporal stores it, read by a client without the codec.
    raw_client = await Client.connect(temporal_server.address, namespace=temporal_server.namespace)
    history = await raw_client.get_workflow_handle(workflow_id(sid)).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    secrets_ = [CONTACT.name, CONTACT.phone, "555-0147", "5550147", CONTACT.email, SUMMARY]
    leaked = [s for s in secrets_ if s.encode() in raw or s in history.to_json()]
    assert not leaked, f"plaintext in the raw history: {leaked}"
    payloads = [p for event in history.events for p in payloads_in(event)]
    assert len(payloads) >= 5  # start signal, activity inputs/results, notes signal, queries are not in history
    assert {(p.metadata["encoding"], p.metadata[KEY_ID_METADATA]) for p in payloads} == {
        (b"binary/encrypted", b"current")
    }

    # The Temporal UI's view: the codec server decodes the same payloads back to the plaintext, for a caller with
    # its token only; the gateway's public port has no codec at all.
    headers = {"Origin": UI_ORIGIN, "X-Namespace": temporal_server.namespace}
    answer = await codec_server.post("decode", as_json(payloads), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
    decoded = from_json(answer.json())
    assert len(decoded) == len(payloads)
    assert not any(p.metadata["encoding"] == b"binary/encrypted" for p in decoded)
    plaintext = b"\n".join(p.data for p in decoded)
    assert CONTACT.name.encode() in plaintext and CONTACT.phone.encode() in plaintext and SUMMARY.encode() in plaintext

    anonymous = await codec_server.http.post(f"{codec_server.url}/decode", json=as_json(payloads), headers=headers)
    assert anonymous.status_code == 401 and CONTACT.phone not in anonymous.text
    on_the_gateway = await codec_server.http.post(f"{gateway}/codec/decode", json=as_json(payloads), headers=headers)
    # 413 before routing for a body this large (the gateway's 8 KiB default), 404 for a small one (below).
    assert on_the_gateway.status_code in (404, 413) and CONTACT.phone not in on_the_gateway.text
    one = await codec_server.http.post(f"{gateway}/codec/decode", json=as_json(payloads[:1]), headers=headers)
    assert one.status_code == 404 and CONTACT.phone not in one.text


# --- the codec server -------------------------------------------------------------------------------------------


async def test_codec_server_encodes_decodes_and_answers_400_for_what_it_cannot_use(codec_server: CodecServer) -> None:
    originals = plain_payloads({"name": CONTACT.name}, "second")
    encoded = await codec_server.post("encode", as_json(originals))
    assert encoded.status_code == 200, encoded.text
    encrypted = from_json(encoded.json())
    assert [p.metadata[KEY_ID_METADATA] for p in encrypted] == [b"current", b"current"]
    decoded = await codec_server.post("decode", encoded.json())
    assert from_json(decoded.json()) == originals
    old = await codec(f"previous:{OLD_KEY}").encode(originals)  # written before the rotation
    assert from_json((await codec_server.post("decode", as_json(old))).json()) == originals

    retired = await codec(f"retired:{generate_key()}").encode(originals)
    answer = await codec_server.post("decode", as_json(retired))
    assert answer.status_code == 400 and "unknown key id 'retired'" in answer.json()["detail"]
    # Which keys are configured is none of the caller's business.
    assert "current" not in answer.text and "previous" not in answer.text

    deep = b'{"payloads": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for body in (b"not json", b'{"payloads": 3}', b'{"payloads": [{"metadata": "x"}]}', b'{"other": []}', b"[]", deep):
        for path in ("encode", "decode"):
            answer = await codec_server.http.post(
                f"{codec_server.url}/{path}", content=body, headers=codec_server.auth(**{"Content-Type": JSON})
            )
            assert answer.status_code == 400, (path, body[:40], answer.status_code, answer.text)
    tampered = encrypted[0]
    tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
    answer = await codec_server.post("decode", as_json([tampered]))
    assert answer.status_code == 400 and "does not decrypt with key 'current'" in answer.json()["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer wrong-token-of-some-length",
        "Basic {token}",
        "{token}",
        "Bearer {token}x",
        "Bearer x{token}",
    ],
    ids=["none", "empty", "wrong", "basic-scheme", "no-scheme", "suffixed", "prefixed"],
)
async def test_codec_server_refuses_every_call_without_its_token(codec_server: CodecServer, authorization) -> None:
    encrypted = await codec(f"current:{NEW_KEY}").encode(plain_payloads(CONTACT.phone))
    headers = {"Authorization": authorization.format(token=codec_server.token)} if authorization else {}
    for path, body in (("decode", as_json(encrypted)), ("encode", as_json(plain_payloads("x")))):
        answer = await codec_server.http.post(f"{codec_server.url}/{path}", json=body, headers=headers)
        assert answer.status_code == 401, (path, answer.status_code)
        assert answer.headers["www-authenticate"] == "Bearer"
        assert CONTACT.phone not in answer.text and "payloads" not in answer.text
    # The right token, spelled as browsers and the CLI do, opens it; health answers without one.
    for scheme in ("Bearer", "bearer"):
        ok = await codec_server.http.post(
            f"{codec_server.url}/decode",
            json=as_json(encrypted),
            headers={"Authorization": f"{scheme} {codec_server.token}"},
        )
        assert ok.status_code == 200 and from_json(ok.json()) == plain_payloads(CONTACT.phone)
    base = codec_server.url.removesuffix(CODEC_PREFIX)
    assert (await codec_server.http.get(f"{base}/healthz")).status_code == 200
    assert (await codec_server.http.get(f"{base}/docs")).status_code == 401  # no docs, and nothing else open


async def raw_exchange(url: str, head: str) -> tuple[int, bytes]:
    """Send only a request's head (no body) over a socket; the answer's status and the whole response."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 30)  # the server closes after a refusal
    finally:
        writer.close()
    return int(response.split(b" ", 2)[1]), response


async def test_codec_server_refuses_an_oversized_body_while_it_streams_and_before_the_token(
    codec_server: CodecServer,
) -> None:
    limit = MAX_BODY_BYTES
    path = f"{CODEC_PREFIX}/decode"
    # Declared far too large (10 GiB), over the wire: answered 413 before a byte of the body is sent, with or without
    # the token.
    for auth in ("", f"Authorization: Bearer {codec_server.token}\r\n"):
        head = f"POST {path} HTTP/1.1\r\nHost: codec\r\n{auth}Content-Length: {10 * 1024**3}\r\n\r\n"
        status, response = await raw_exchange(codec_server.url, head)
        assert status == 413, response[:300]

    # Streamed without a length: counted as the app reads it (the ASGI app itself, so what was read can be counted).
    app = codec_server.app
    consumed = 0

    async def chunks(total: int):
        nonlocal consumed
        while consumed < total:
            piece = min(64 * 1024, total - consumed)
            consumed += piece
            yield b" " * piece

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec") as http:
        answer = await http.post(path, content=chunks(limit + 1), headers=codec_server.auth())
        assert answer.status_code == 413, answer.text
        assert consumed <= limit + 64 * 1024, "read on past the limit"
        # Without the token nothing of it is read: 401.
        consumed = 0
        answer = await http.post(path, content=chunks(limit + 1), headers={"Content-Type": JSON})
        assert answer.status_code == 401 and consumed <= 64 * 1024

    # At the limit it is read and parsed (whitespace around an empty Payloads), over the wire.
    body = b"{}" + b" " * (limit - 2)
    answer = await codec_server.http.post(
        f"{codec_server.url}/decode", content=body, headers=codec_server.auth(**{"Content-Type": JSON})
    )
    assert answer.status_code == 200, answer.text


async def test_codec_server_cors_allows_the_temporal_ui_and_not_other_origins(codec_server: CodecServer) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    url = f"{codec_server.url}/decode"
    # Preflights carry no credentials: answered before the token is looked at.
    answer = await codec_server.http.options(url, headers={"Origin": UI_ORIGIN, **preflight})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "x-namespace" in allowed and "authorization" in allowed
    refused = await codec_server.http.options(url, headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers
    simple = await codec_server.post("decode", as_json([]), headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


async def test_codec_server_needs_keys_and_a_token_unless_the_dev_stack_runs_it() -> None:
    keys = {"FLEXSF_ENCRYPTION_KEYS": f"k:{NEW_KEY}"}
    with pytest.raises(ConfigurationError, match="FLEXSF_CODEC_TOKEN is not set"):
        create_codec_app(settings_from(keys))
    with pytest.raises(ConfigurationError, match="FLEXSF_ENCRYPTION_KEYS is not set"):
        create_codec_app(settings_from({"FLEXSF_CODEC_TOKEN": secrets.token_urlsafe(32)}))
    app = create_codec_app(settings_from(keys), allow_unauthenticated=True)
    assert app.state.authenticated is False
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec") as http:
        answer = await http.post(f"{CODEC_PREFIX}/encode", json=as_json(plain_payloads("x")))
        assert answer.status_code == 200
        assert from_json(answer.json())[0].metadata[KEY_ID_METADATA] == b"k"


@pytest.mark.parametrize("keys", [None, f"k:{NEW_KEY}"], ids=["without-keys", "with-keys"])
async def test_the_gateway_has_no_codec_routes(twilio_sandbox, temporal_client, keys) -> None:
    extra = {"flexsf_encryption_keys": keys} if keys else {}
    async with run_gateway(gateway_settings(twilio_sandbox, f"plain-{uuid.uuid4()}", **extra), temporal_client) as gw:
        for path in ("decode", "encode"):
            answer = await gw.http.post(f"{gw.url}/codec/{path}", json={"payloads": []})
            assert answer.status_code == 404, (path, answer.status_code)
        assert (await gw.http.get(f"{gw.url}/healthz")).status_code == 200


# --- flexsf codec-server ----------------------------------------------------------------------------------------


def test_codec_server_command_serves_the_codec_alone_with_keys_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"k2:{NEW_KEY}\nk1:{OLD_KEY}\n")
    token = secrets.token_urlsafe(32)
    port = free_port()
    proc = subprocess.Popen(
        [str(FLEXSF), "codec-server", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(FLEXSF_ENCRYPTION_KEYS_FILE=str(key_file), FLEXSF_CODEC_TOKEN=token),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, 60)
        url = f"http://127.0.0.1:{port}/codec"
        old = asyncio.run(codec(f"k1:{OLD_KEY}").encode(plain_payloads(CONTACT.phone)))
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(trust_env=False, timeout=30) as http:
            decoded = http.post(f"{url}/decode", json=as_json(old), headers=auth)
            assert from_json(decoded.json()) == plain_payloads(CONTACT.phone)
            encoded = http.post(f"{url}/encode", json=as_json(plain_payloads("x")), headers=auth).json()
            assert from_json(encoded)[0].metadata[KEY_ID_METADATA] == b"k2"
            assert http.post(f"{url}/decode", content=b"[]", headers=auth).status_code == 400
            assert http.post(f"{url}/decode", json=as_json(old)).status_code == 401
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    assert NEW_KEY not in output and OLD_KEY not in output and token not in output


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FLEXSF_CODEC_TOKEN": "t" * 32}, "FLEXSF_ENCRYPTION_KEYS is not set"),
        ({"FLEXSF_ENCRYPTION_KEYS": f"k1:{OLD_KEY[:20]}", "FLEXSF_CODEC_TOKEN": "t" * 32}, "key 'k1' is 15 bytes"),
        ({"FLEXSF_ENCRYPTION_KEYS": f"k1:{OLD_KEY}"}, "FLEXSF_CODEC_TOKEN is not set"),
        (
            {"FLEXSF_ENCRYPTION_KEYS": f"k1:{OLD_KEY}", "FLEXSF_CODEC_TOKEN": "short-token"},
            "FLEXSF_CODEC_TOKEN: is shorter",
        ),
        ({"FLEXSF_ENCRYPTION_KEYS": f"k1:{OLD_KEY}", "FLEXSF_CODEC_TOKEN": "changeme"}, "FLEXSF_CODEC_TOKEN"),
    ],
    ids=["no-keys", "short-key", "no-token", "short-token", "placeholder-token"],
)
def test_codec_server_command_refuses_to_start_without_usable_keys_and_token(tmp_path: Path, env, message) -> None:
    done = subprocess.run(
        [str(FLEXSF), "codec-server", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr
    for value in env.values():
        assert value not in done.stderr + done.stdout or value in message


# --- the key file (compose) -------------------------------------------------------------------------------------


def test_the_setup_step_creates_an_owner_only_key_file_once_and_the_settings_read_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "encryption-keys"
    path.parent.mkdir()
    first = subprocess.run(
        [sys.executable, "-m", "flexsf.codec", "create-key-file", str(path)], capture_output=True, text=True
    )
    assert first.returncode == 0 and "created" in first.stdout, first.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.read_text()
    keys = parse_keys(written)
    assert len(keys.ids) == 1
    key = written.strip().partition(":")[2]
    assert key not in first.stdout + first.stderr
    # Every later run (each `docker compose up`) leaves it as it is.
    again = subprocess.run(
        [sys.executable, "-m", "flexsf.codec", "create-key-file", str(path)], capture_output=True, text=True
    )
    assert again.returncode == 0 and "left as it is" in again.stdout
    assert path.read_text() == written
    assert not [p for p in path.parent.iterdir() if p != path], "a staging file was left behind"

    settings = load_settings(_env_file=None, flexsf_encryption_keys_file=str(path))
    assert settings.encryption_keys().keys == keys.keys
    assert isinstance(data_converter(settings).payload_codec, AesGcmCodec)
    assert key not in repr(settings)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("", "no key given"),
        (f"a:{OLD_KEY[:-2]}", "key 'a' is not valid base64"),
        (f"a:{OLD_KEY}\nb", "entry 2 is not keyid:base64key"),
    ],
    ids=["missing", "empty", "bad-base64", "bad-entry"],
)
def test_a_bad_key_file_is_refused_naming_the_file_and_never_a_key(tmp_path: Path, content, message) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError) as refused:
        load_settings(_env_file=None, flexsf_encryption_keys_file=str(path))
    text = str(refused.value)
    assert "FLEXSF_ENCRYPTION_KEYS_FILE" in text and str(path) in text and message in text
    assert OLD_KEY[:-2] not in text
    broken = subprocess.run(
        [sys.executable, "-m", "flexsf.codec", "create-key-file", str(path)], capture_output=True, text=True
    )
    if content is None:  # absent: created
        assert broken.returncode == 0
    else:  # present but unusable: left alone, and the setup step fails
        assert broken.returncode == 1 and message in broken.stderr and OLD_KEY[:-2] not in broken.stderr


def test_keys_from_the_environment_and_a_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"a:{OLD_KEY}")
    with pytest.raises(ConfigurationError, match="FLEXSF_ENCRYPTION_KEYS and FLEXSF_ENCRYPTION_KEYS_FILE are both set"):
        load_settings(_env_file=None, flexsf_encryption_keys=f"b:{NEW_KEY}", flexsf_encryption_keys_file=str(path))


# --- flexsf dev with encryption on ----------------------------------------------------------------------------


def test_flexsf_dev_encrypts_and_points_the_temporal_ui_at_its_codec_server(tmp_path: Path) -> None:

    from devtools.dev import CODEC_PORT, GATEWAY_PORT, TEMPORAL_UI_PORT
    from tests.test_dev_stack import flexsf_dev, free_offset, wait_until

    offset = free_offset()
    with flexsf_dev(tmp_path, offset, clean_env(FLEXSF_ENCRYPTION_KEYS=f"dev:{NEW_KEY}")) as proc:
        info_file = tmp_path / ".flexsf" / "dev.json"
        wait_until(info_file.exists, 120, ".flexsf/dev.json", proc)
        urls = json.loads(info_file.read_text())["urls"]
        codec_url = f"http://127.0.0.1:{CODEC_PORT + offset}/codec"
        ui_origin = f"http://127.0.0.1:{TEMPORAL_UI_PORT + offset}"
        assert urls["codec"] == codec_url
        with httpx.Client(trust_env=False, timeout=30) as http:
            ui_settings = http.get(f"{ui_origin}/api/v1/settings").json()
            assert ui_settings["Codec"]["Endpoint"] == codec_url
            preflight = http.options(
                f"{codec_url}/decode",
                headers={
                    "Origin": ui_origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-namespace",
                },
            )
            assert preflight.headers.get("access-control-allow-origin") == ui_origin
            # The gateway's port has no codec, in dev as anywhere.
            gateway_codec = http.post(f"http://127.0.0.1:{GATEWAY_PORT + offset}/codec/decode", json={"payloads": []})
            assert gateway_codec.status_code == 404

            # One call through the gateway and the worker, both encrypting.
            control = urls["twilio_control"]
            sid = http.post(f"{control}/tasks", json={"attributes": {"from": CONTACT.phone}}).json()["sid"]
            for step, body in (("reserve", {}), ("accept", {}), ("wrapup", {}), ("complete", {"reason": "done"})):
                assert http.post(f"{control}/tasks/{sid}/{step}", json=body).status_code < 300, step

            async def raw_history():
                raw = await Client.connect(urls["temporal"])  # no codec: what Temporal stores
                return await history_once_completed(raw.get_workflow_handle(workflow_id(sid)), 120)

            history = asyncio.run(raw_history())
            raw = b"".join(event.SerializeToString() for event in history.events)
            assert CONTACT.phone.encode() not in raw and CONTACT.name.encode() not in raw
            payloads = [p for event in history.events for p in payloads_in(event)]
            assert payloads and all(p.metadata[KEY_ID_METADATA] == b"dev" for p in payloads)
            # Dev only: the UI cannot send a token, so this codec server takes none (and listens on loopback).
            decoded = http.post(f"{codec_url}/decode", json=as_json(payloads), headers={"Origin": ui_origin})
            assert CONTACT.phone.encode() in b"".join(p.data for p in from_json(decoded.json()))
    assert NEW_KEY not in (tmp_path / "dev.out").read_text()
