"""Dependencies of the gateway's routes: the settings, the Temporal client opened once in the lifespan, the caller.

The caller of the agent API is authenticated by `current_agent`: a client address that failed authentication too
often is answered 429 before anyone asks Twilio (`gateway.auth.AuthFailureLimiter`), and every 401 counts against it.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from flexsf.flex_config import FlexConfigCache
from flexsf.settings import Settings
from gateway.auth import (
    Agent,
    AuthFailureLimiter,
    InvalidToken,
    TokenServiceUnavailable,
    TokenValidator,
    token_key,
)
from gateway.client_address import client_address, limiter_key

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
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    validator: TokenValidatorDep,
) -> Agent:
    limiter: AuthFailureLimiter = request.app.state.auth_limiter
    client = limiter_key(client_address(request.scope, request.app.state.trusted_proxies))
    token = credentials.credentials.strip() if credentials is not None else ""
    wait = limiter.retry_after(client)
    if wait is not None and not (token and len(token) <= MAX_TOKEN_CHARS and validator.known(token)):
        raise HTTPException(
            429,
            "too many failed authentications from this address; retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    def refused(reason: str) -> HTTPException:
        limiter.failed(client)
        return HTTPException(401, reason, headers=_CHALLENGE)

    if not token:
        raise refused("Authorization: Bearer <Flex token> is required")
    if len(token) > MAX_TOKEN_CHARS:
        raise refused(f"the Flex token is longer than {MAX_TOKEN_CHARS} characters")
    # A token not accepted before may cost a Twilio call: it holds a place in the client's limit while it does.
    with nullcontext() if validator.known(token) else limiter.attempt(client, token_key(token)):
        try:
            return await validator.validate(token)
        except InvalidToken as exc:
            raise refused(f"the Flex token was refused: {exc}") from None
        except TokenServiceUnavailable as exc:
            raise HTTPException(503, str(exc)) from None


AgentDep = Annotated[Agent, Depends(current_agent)]
