"""Dependencies of the gateway's routes: the settings, the Temporal client opened once in the lifespan, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from flexsf.flex_config import FlexConfigCache
from flexsf.settings import Settings
from gateway.auth import Agent, InvalidToken, TokenServiceUnavailable, TokenValidator

# auto_error=False: we answer 401 with our own reason (and the scheme still shows in the OpenAPI document).
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="FlexToken",
    description="The agent's Flex token (`manager.user.token` in a Flex plugin)",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
MAX_TOKEN_CHARS = 8192


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_temporal_client(request: Request) -> Client:
    return request.app.state.temporal_client


def get_token_validator(request: Request) -> TokenValidator:
    validator = request.app.state.token_validator
    if validator is None:
        raise HTTPException(503, "the agent API needs TWILIO_ACCOUNT_SID to validate Flex tokens")
    return validator


def get_flex_config(request: Request) -> FlexConfigCache:
    cache = request.app.state.flex_config
    if cache is None:
        raise HTTPException(503, "the agent API needs TWILIO_ACCOUNT_SID to read the Flex configuration")
    return cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
TemporalClientDep = Annotated[Client, Depends(get_temporal_client)]
TokenValidatorDep = Annotated[TokenValidator, Depends(get_token_validator)]
FlexConfigDep = Annotated[FlexConfigCache, Depends(get_flex_config)]


async def current_agent(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    validator: TokenValidatorDep,
) -> Agent:
    if credentials is None or not credentials.credentials.strip():
        raise HTTPException(401, "Authorization: Bearer <Flex token> is required", headers=_CHALLENGE)
    token = credentials.credentials.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise HTTPException(401, f"the Flex token is longer than {MAX_TOKEN_CHARS} characters", headers=_CHALLENGE)
    try:
        return await validator.validate(token)
    except InvalidToken as exc:
        raise HTTPException(401, f"the Flex token was refused: {exc}", headers=_CHALLENGE) from None
    except TokenServiceUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


AgentDep = Annotated[Agent, Depends(current_agent)]
