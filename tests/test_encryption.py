"""Payload encryption: the AES-GCM codec, key configuration and rotation, an encrypted task end to end (its raw
history holds no caller name, phone number or notes), and the codec endpoint the Temporal UI calls.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devtools.netutil import free_port, wait_for_port
from flexsf.codec import KEY_ID_METADATA, AesGcmCodec, PayloadDecryptionError, generate_key, parse_keys
from flexsf.models import Notes, Stage
from flexsf.settings import ConfigurationError, load_settings
from flexsf.temporal_client import data_converter
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import (
    Stack,
    gateway_settings,
    run_gateway,
    settings_from,
    stack_env,
    stack_gateway,
    start_stack_worker,
)
from tests.test_dev_stack import clean_env
from workflows.delivery import signal_notes

OLD_KEY, NEW_KEY = generate_key(), generate_key()
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
SUMMARY = "Asked to move her appointment to Thursday"
UI_ORIGIN = "http://localhost:8233"
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


async def test_unknown_key_id_names_the_key_id_and_never_a_key() -> None:
    encoded = await codec(f"retired:{OLD_KEY}").encode(plain_payloads("x"))
    with pytest.raises(PayloadDecryptionError, match="unknown key id 'retired'") as info:
        await codec(f"current:{NEW_KEY}").decode(encoded)
    assert NEW_KEY not in str(info.value) and OLD_KEY not in str(info.value)


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


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every `Payload` inside a proto message (inputs, results, headers, memos, failure details …) except search
    attributes: those the server indexes, so no codec touches them (ours hold ids only: workflows/search_attributes)."""
    if isinstance(message, Payload):
        yield message
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


def as_json(payloads) -> dict:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def from_json(body: dict) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in body.get("payloads", [])]


async def test_an_encrypted_task_works_and_its_raw_history_holds_no_caller_data(
    encrypted_stack: Stack, gateway: str, temporal_server
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
    secrets = [CONTACT.name, CONTACT.phone, "555-0147", "5550147", CONTACT.email, SUMMARY]
    leaked = [s for s in secrets if s.encode() in raw or s in history.to_json()]
    assert not leaked, f"plaintext in the raw history: {leaked}"
    payloads = [p for event in history.events for p in payloads_in(event)]
    assert len(payloads) >= 5  # start signal, activity inputs/results, notes signal, queries are not in history
    assert {(p.metadata["encoding"], p.metadata[KEY_ID_METADATA]) for p in payloads} == {
        (b"binary/encrypted", b"current")
    }

    # The Temporal UI's view: the gateway's codec endpoint decodes the same payloads back to the plaintext.
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        answer = await http.post(
            f"{gateway}/codec/decode",
            json=as_json(payloads),
            headers={"Origin": UI_ORIGIN, "X-Namespace": temporal_server.namespace},
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
    decoded = from_json(answer.json())
    assert len(decoded) == len(payloads)
    assert not any(p.metadata["encoding"] == b"binary/encrypted" for p in decoded)
    plaintext = b"\n".join(p.data for p in decoded)
    assert CONTACT.name.encode() in plaintext and CONTACT.phone.encode() in plaintext and SUMMARY.encode() in plaintext


# --- the codec endpoint -----------------------------------------------------------------------------------------


async def test_codec_endpoint_encodes_decodes_and_answers_400_for_what_it_cannot_use(gateway: str) -> None:
    originals = plain_payloads({"name": CONTACT.name}, "second")
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        encoded = await http.post(f"{gateway}/codec/encode", json=as_json(originals))
        assert encoded.status_code == 200, encoded.text
        encrypted = from_json(encoded.json())
        assert [p.metadata[KEY_ID_METADATA] for p in encrypted] == [b"current", b"current"]
        decoded = await http.post(f"{gateway}/codec/decode", json=encoded.json())
        assert from_json(decoded.json()) == originals
        old = await codec(f"previous:{OLD_KEY}").encode(originals)  # written before the rotation
        assert from_json((await http.post(f"{gateway}/codec/decode", json=as_json(old))).json()) == originals

        retired = await codec(f"retired:{generate_key()}").encode(originals)
        answer = await http.post(f"{gateway}/codec/decode", json=as_json(retired))
        assert answer.status_code == 400 and "unknown key id 'retired'" in answer.json()["detail"]
        for body in (b"not json", b'{"payloads": 3}', b'{"payloads": [{"metadata": "x"}]}', b'{"other": []}'):
            for path in ("encode", "decode"):
                answer = await http.post(
                    f"{gateway}/codec/{path}", content=body, headers={"Content-Type": "application/json"}
                )
                assert answer.status_code == 400, (path, body, answer.status_code, answer.text)
        tampered = encrypted[0]
        tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
        answer = await http.post(f"{gateway}/codec/decode", json=as_json([tampered]))
        assert answer.status_code == 400 and "does not decrypt with key 'current'" in answer.json()["detail"]


async def test_codec_cors_allows_the_temporal_ui_and_not_other_origins(gateway: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"}
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        # The gateway's own CORS list (FLEXSF_CORS_ORIGINS) is the Flex UI only; the codec has its own.
        answer = await http.options(f"{gateway}/codec/decode", headers={"Origin": UI_ORIGIN, **preflight})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
        assert "x-namespace" in answer.headers["access-control-allow-headers"].lower()
        refused = await http.options(f"{gateway}/codec/decode", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in refused.headers
        # The Temporal UI's origin is not let into the agent API by the codec's policy.
        agent = await http.options(f"{gateway}/agent/tasks", headers={"Origin": UI_ORIGIN, **preflight})
        assert agent.headers.get("access-control-allow-origin") != UI_ORIGIN


async def test_without_keys_the_gateway_has_no_codec_endpoint(twilio_sandbox, temporal_client) -> None:
    async with run_gateway(gateway_settings(twilio_sandbox, f"plain-{uuid.uuid4()}"), temporal_client) as gw:
        answer = await gw.http.post(f"{gw.url}/codec/decode", json={"payloads": []})
        assert answer.status_code == 404
        assert (await gw.http.get(f"{gw.url}/healthz")).status_code == 200


# --- flexsf codec-server ----------------------------------------------------------------------------------------


def test_codec_server_command_serves_the_codec_alone(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(FLEXSF), "codec-server", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(FLEXSF_ENCRYPTION_KEYS=f"k2:{NEW_KEY},k1:{OLD_KEY}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, 60)
        url = f"http://127.0.0.1:{port}/codec"
        old = asyncio.run(codec(f"k1:{OLD_KEY}").encode(plain_payloads(CONTACT.phone)))
        with httpx.Client(trust_env=False, timeout=30) as http:
            assert from_json(http.post(f"{url}/decode", json=as_json(old)).json()) == plain_payloads(CONTACT.phone)
            encoded = http.post(f"{url}/encode", json=as_json(plain_payloads("x"))).json()
            assert from_json(encoded)[0].metadata[KEY_ID_METADATA] == b"k2"
            assert http.post(f"{url}/decode", content=b"[]").status_code == 400
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    assert NEW_KEY not in output and OLD_KEY not in output


@pytest.mark.parametrize(
    "keys, message",
    [
        (None, "FLEXSF_ENCRYPTION_KEYS is not set"),
        (f"k1:{OLD_KEY[:20]}", "key 'k1' is 15 bytes; AES-256 needs 32"),
    ],
    ids=["unset", "short"],
)
def test_codec_server_command_refuses_to_start_without_usable_keys(tmp_path: Path, keys, message) -> None:
    env = clean_env(**({"FLEXSF_ENCRYPTION_KEYS": keys} if keys else {}))
    done = subprocess.run(
        [str(FLEXSF), "codec-server", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert OLD_KEY[:20] not in done.stderr + done.stdout


# --- flexsf dev with encryption on ----------------------------------------------------------------------------


def test_flexsf_dev_encrypts_and_points_the_temporal_ui_at_the_gateways_codec(tmp_path: Path) -> None:
    from temporalio.api.enums.v1 import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from devtools.dev import GATEWAY_PORT, TEMPORAL_UI_PORT
    from tests.test_dev_stack import flexsf_dev, free_offset, wait_until

    offset = free_offset()
    with flexsf_dev(tmp_path, offset, clean_env(FLEXSF_ENCRYPTION_KEYS=f"dev:{NEW_KEY}")) as proc:
        info_file = tmp_path / ".flexsf" / "dev.json"
        wait_until(info_file.exists, 120, ".flexsf/dev.json", proc)
        urls = json.loads(info_file.read_text())["urls"]
        codec_url = f"http://127.0.0.1:{GATEWAY_PORT + offset}/codec"
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

            # One call through the gateway and the worker, both encrypting.
            control = urls["twilio_control"]
            sid = http.post(f"{control}/tasks", json={"attributes": {"from": CONTACT.phone}}).json()["sid"]
            for step, body in (("reserve", {}), ("accept", {}), ("wrapup", {}), ("complete", {"reason": "done"})):
                assert http.post(f"{control}/tasks/{sid}/{step}", json=body).status_code < 300, step

            async def raw_history():
                raw = await Client.connect(urls["temporal"])  # no codec: what Temporal stores
                handle = raw.get_workflow_handle(workflow_id(sid))
                deadline = asyncio.get_running_loop().time() + 120
                while True:  # callbacks are asynchronous: the workflow may not exist yet
                    try:
                        status = (await handle.describe()).raw_description.workflow_execution_info.status
                    except RPCError as exc:
                        if exc.status != RPCStatusCode.NOT_FOUND:
                            raise
                        status = None
                    if status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED:
                        return await handle.fetch_history()
                    assert asyncio.get_running_loop().time() < deadline, f"the workflow did not complete: {status}"
                    await asyncio.sleep(0.2)

            history = asyncio.run(raw_history())
            raw = b"".join(event.SerializeToString() for event in history.events)
            assert CONTACT.phone.encode() not in raw and CONTACT.name.encode() not in raw
            payloads = [p for event in history.events for p in payloads_in(event)]
            assert payloads and all(p.metadata[KEY_ID_METADATA] == b"dev" for p in payloads)
            decoded = http.post(f"{codec_url}/decode", json=as_json(payloads), headers={"Origin": ui_origin})
            assert CONTACT.phone.encode() in b"".join(p.data for p in from_json(decoded.json()))
    assert NEW_KEY not in (tmp_path / "dev.out").read_text()
