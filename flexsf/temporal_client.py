"""The one place every Temporal client gets its data converter (worker, gateway, `flexsf dev`, codec server).

Pydantic JSON for our models; with `FLEXSF_ENCRYPTION_KEYS` set, every payload is AES-GCM encrypted by
`flexsf.codec.AesGcmCodec`, and failure messages and stack traces are moved into an (encrypted) payload too, since an
error can quote a phone number or a name.
"""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from flexsf import tracing
from flexsf.codec import AesGcmCodec
from flexsf.settings import Settings, load_settings


def payload_codec(settings: Settings) -> AesGcmCodec | None:
    keys = settings.encryption_keys()
    return AesGcmCodec(keys) if keys is not None else None


def data_converter(settings: Settings) -> DataConverter:
    codec = payload_codec(settings)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(settings: Settings | None = None, runtime: Runtime | None = None) -> Client:
    """`runtime`: e.g. `metrics.prometheus_runtime(address)` to export metrics; None: Temporal's default runtime.

    In a process that traces (`flexsf.tracing.start`), the client carries Temporal's tracing interceptor, and so does
    any worker built on it (a worker takes the client's interceptors that are worker interceptors too)."""
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    return await Client.connect(
        **config,
        data_converter=data_converter(settings or load_settings()),
        runtime=runtime,
        interceptors=tracing.temporal_interceptors(),
    )
