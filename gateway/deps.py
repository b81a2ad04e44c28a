"""Dependencies of the gateway's routes: the settings and the Temporal client opened once in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from flexsf.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_temporal_client(request: Request) -> Client:
    return request.app.state.temporal_client


SettingsDep = Annotated[Settings, Depends(get_settings)]
TemporalClientDep = Annotated[Client, Depends(get_temporal_client)]
