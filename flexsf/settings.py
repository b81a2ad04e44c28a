"""All configuration, from the environment or `.env`, validated once at start.

Secrets are `SecretStr`: they never appear in a repr, a log line or a validation error.
Temporal's own connection settings (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS …) are read by
Temporal's envconfig, not here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from flexsf.vocabulary import FLAG_NAMES

PRODUCTION_TOKEN_URL = "https://login.salesforce.com/services/oauth2/token"
_PLACEHOLDERS = {"changeme", "change-me", "xxx", "secret", "your-secret-here", "todo"}


# `FLEXSF_FEATURES__<FLAG>=true|false` wins over Flex's `salesforce_integration` config; unset: as Flex says.
# One optional field per flag of the vocabulary, so a new flag needs no edit here.
FeatureOverrides = create_model(
    "FeatureOverrides",
    __doc__="Per-flag overrides of Flex's `salesforce_integration` config (None: as Flex says).",
    **{name: (bool | None, None) for name in FLAG_NAMES},
)


def _refuse_placeholder(value: SecretStr | None, name: str) -> SecretStr | None:
    if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDERS:
        raise ValueError(f"{name} is a placeholder; set the real value")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", env_nested_delimiter="__", extra="ignore", case_sensitive=False
    )

    # Salesforce: token URL + credentials; JWT bearer, then client credentials, then username-password.
    salesforce_token_url: str = PRODUCTION_TOKEN_URL
    salesforce_client_id: str | None = None
    salesforce_client_secret: SecretStr | None = None
    salesforce_username: str | None = None
    salesforce_private_key_file: Path | None = None
    salesforce_password: SecretStr | None = None
    salesforce_api_version: str = "62.0"
    salesforce_ca_bundle: Path | None = None
    salesforce_jwt_audience: str | None = Field(
        None,
        description="The `aud` claim of JWT bearer assertions, when the one derived from SALESFORCE_TOKEN_URL is "
        "not what the org accepts: `https://test.salesforce.com` for a scratch org, `https://login.salesforce.com` "
        "behind a custom domain, or an Experience Cloud site URL. Unset: `https://test.salesforce.com` for "
        "test.salesforce.com and sandbox My Domains, `https://login.salesforce.com` for other Salesforce hosts, the "
        "token URL's origin elsewhere (a local emulator).",
    )
    salesforce_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a Salesforce REST call may wait to connect, and then for each part of the answer, "
        "before it is given up and retried (as unreachable) by the step that made it. Keep it well under the "
        "steps' 20-30 s budgets. Logging in has its own (5 s connect, 10 s read).",
    )

    # Twilio: account + auth token, or an API key pair.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_api_key: str | None = None
    twilio_api_secret: SecretStr | None = None
    twilio_workspace_sid: str | None = None
    twilio_api_base_url: str | None = None
    twilio_timeout_s: float = Field(10.0, gt=0)

    flexsf_task_queue: str = "flex-salesforce"
    flexsf_temporal_ui_url: str | None = None
    # host:port the worker serves Prometheus metrics on (`/metrics`: Temporal SDK and flexsf_* metrics); unset: off.
    flexsf_worker_metrics_address: str | None = None
    flexsf_worker_tuning: Literal["fixed", "autoscale", "resource"] = Field(
        "fixed",
        description="How the worker polls and sizes its slots: `fixed`, 16 workflow-task and 16 activity-task polls; "
        "`autoscale`, the SDK's poller autoscaling (1 to 100 polls, scaled on the server's answers; Temporal Server "
        "1.28+); `resource`, the SDK's resource-based slots (system CPU 90 %, memory 80 %) with the fixed polls. "
        "Measured on one shared host, autoscaling was no better and the resource tuner worse (docs/performance.md).",
    )
    # host:port the gateway serves Prometheus metrics on (`/metrics`, a listener of its own); unset: off.
    flexsf_gateway_metrics_address: str | None = None
    # Serve the gateway's /docs, /redoc and /openapi.json (`flexsf dev` turns it on); off: they answer 404.
    flexsf_gateway_docs: bool = False
    # Log level of `flexsf worker`, `flexsf gateway` and `flexsf dev` (DEBUG, INFO, WARNING …).
    flexsf_log_level: str = "INFO"
    # The public base URL Twilio calls the gateway on (e.g. https://flexsf.example.com behind a proxy); callback
    # signatures are checked against it + the request path. `flexsf gateway` refuses to start without it (the URL is
    # never taken from the request's Host header); only `flexsf dev` runs without, on its own socket address.
    flexsf_public_base_url: str | None = None
    flexsf_features: FeatureOverrides = Field(default_factory=FeatureOverrides)
    flexsf_flex_config_ttl_s: float = 60.0
    # Browser origins allowed to call the agent API (the Flex UI, the Salesforce Lightning domain), comma-separated.
    flexsf_cors_origins: Annotated[list[str], NoDecode] = []
    # How many validated Flex agent tokens the gateway remembers (each until it expires).
    flexsf_token_cache_size: int = Field(1024, ge=1)
    flexsf_token_revalidate_s: float = Field(
        300,
        gt=0,
        le=3600,
        description="Seconds an accepted Flex token is trusted before Twilio is asked again: a revoked token stops "
        "working within this period (while Twilio cannot answer, the earlier answer holds until the token expires).",
    )
    flexsf_token_refused_ttl_s: float = Field(
        60,
        ge=0,
        le=3600,
        description="Seconds a refused Flex token is answered 401 from memory (kept as its SHA-256, never the token) "
        "without asking Twilio again; 0: ask every time.",
    )
    flexsf_auth_failure_limit: int = Field(
        5,
        ge=1,
        description="Failed agent authentications (401s) one client address may cause within "
        "FLEXSF_AUTH_FAILURE_WINDOW_S; past it the address is answered 429 with Retry-After, except for a token "
        "already validated. IPv6 addresses count per /64.",
    )
    flexsf_auth_failure_window_s: float = Field(
        60, gt=0, description="The sliding window of FLEXSF_AUTH_FAILURE_LIMIT, in seconds."
    )
    flexsf_trusted_proxies: Annotated[list[str], NoDecode] = Field(
        [],
        description="Reverse proxies (IP addresses or CIDRs, comma-separated) whose X-Forwarded-For the gateway "
        "believes: the client is then the right-most address of it that is not one of them. Unset: the socket peer "
        "is the client, and X-Forwarded-For is ignored.",
    )
    flexsf_callback_max_age_s: float = Field(
        300,
        gt=0,
        description="How old a signed TaskRouter callback's Timestamp may be; an older one (or one more than a "
        "minute in the future) is refused 403, so a captured callback cannot be replayed later. The lost-event "
        "timer, the sweep and `flexsf reconcile` recover what was refused.",
    )

    # The "softphone layout": which objects a screen-pop search looks in, and how.
    flexsf_search_objects: Annotated[list[str], NoDecode] = ["Contact", "Lead", "Account"]
    flexsf_search_limit: int = Field(20, ge=1, le=200)
    flexsf_person_accounts: bool = False
    flexsf_default_region: str = "US"
    flexsf_search_no_match_pop: str = Field(
        "new_record:Contact",
        description="What the agent's Salesforce opens when the screen-pop search finds no record, as a softphone "
        "layout's no-match setting: `new_record:<Object>` opens the object's new-record modal with the caller's phone "
        "number, e-mail address or name filled in (Contact, Lead, Account and Case; another object opens empty), "
        "`search` opens Salesforce's search page for the search term, `none` opens nothing.",
    )

    # Click-to-dial's destination policy (flexsf/dial_policy.py): what a click on a number in Salesforce may call.
    flexsf_dial_allowed_countries: Annotated[list[str], NoDecode] = Field(
        [],
        description="ISO 3166 region codes click-to-dial may call, comma-separated (`US,CA`: North America's +1 is "
        "25 countries, the Caribbean's among them). Unset: the country of FLEXSF_DEFAULT_REGION only. Premium-rate, "
        "shared-cost, UAN, personal, pager, voicemail and non-geographic (satellite, +800, +882 …) numbers are "
        "refused wherever they are.",
    )
    flexsf_dial_allow_short_codes: bool = Field(
        False,
        description="Let click-to-dial call short codes of FLEXSF_DEFAULT_REGION (`611`), except premium-rate ones; "
        "emergency numbers never.",
    )

    # Activity logging.
    flexsf_activity_external_id_field: str | None = None
    flexsf_activity_priority: str = "Normal"
    flexsf_activity_topics_field: str | None = None
    flexsf_activity_sentiment_field: str | None = None
    flexsf_activity_type: str | None = Field(
        "Call",
        description="Task Type of a voice call: a value of the org's Type picklist. Blank: Type is not sent (for an "
        "integration user whom field-level security keeps from Type). Other channels never send Type or CallType.",
    )
    flexsf_owner_mapping: Literal["email", "sfdcUserId", "none"] = Field(
        "email",
        description="Who owns the call activity: `email`, the active Salesforce user with the worker's `email` "
        "attribute; `sfdcUserId`, the user id in the worker's `sfdcUserId` attribute; `none`, the integration user. A "
        "worker who maps to no user leaves the integration user as owner, said on the task's view (`owner_unmapped`) "
        "and counted in flexsf_activity_log_owner_unmapped_total.",
    )
    flexsf_notes_precedence: Literal["copilot", "task"] = Field(
        "copilot",
        description="Where CallDisposition and Description come from when both the copilot's notes (with Flex's "
        "`copilot_notes` on) and the task's `conversations.outcome`/`content` have one: `copilot` (the original "
        "plugin's choice) or `task`. Field by field, the other source fills what the preferred one lacks.",
    )
    flexsf_log_unhandled_tasks: bool = Field(
        False,
        description="Also log tasks no agent accepted (canceled or abandoned in the queue), as the integration user's "
        "Task related to nothing. Off: only tasks an agent handled are logged, as the original plugin does.",
    )

    # Timers of the task workflow (seconds).
    flexsf_selection_timeout_s: float = Field(300, gt=0)
    flexsf_notes_grace_s: float = Field(600, ge=0)
    flexsf_lost_event_window_s: float = Field(1800, gt=0)
    flexsf_repair_window_s: float = Field(7 * 86400, gt=0)
    flexsf_history_events_limit: int = Field(
        2000,
        ge=100,
        description="History events after which a waiting task workflow continues as new, carrying its state (it "
        "also does when Temporal suggests it). Keeps a task open for days far from Temporal's history limits.",
    )

    # Limit-aware writes: at or above this share of the org's daily API limit (Sforce-Limit-Info), activity logs
    # wait with backoff (searches go on: an agent waits for them).
    flexsf_salesforce_api_budget_share: float = Field(0.9, gt=0, le=1)
    flexsf_api_budget_retry_s: float = Field(
        60, gt=0, description="First wait of a log held back by the API budget; doubles per check, up to 30 min."
    )

    # The sweep: a Temporal Schedule that recovers tasks whose every callback was lost (see docs/operating.md).
    flexsf_sweep_interval_s: float = Field(300, ge=10, description="How often the sweep reads TaskRouter's Events.")
    flexsf_sweep_overlap_s: float = Field(
        120, ge=0, description="How far before its last cursor a sweep reads again (events listed late)."
    )
    flexsf_sweep_first_lookback_s: float = Field(
        3600, gt=0, description="How far back the first sweep (no cursor yet) reads."
    )

    # Payload encryption (flexsf.codec): comma-separated keyid:base64key pairs of 32-byte keys; the first encrypts,
    # all decrypt (rotate by prepending a new key). Unset: payloads are stored in plaintext.
    flexsf_encryption_keys: SecretStr | None = None
    # Browser origins of the Temporal UI allowed to call the codec endpoint (/codec/encode, /codec/decode).
    flexsf_codec_cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:8233", "http://127.0.0.1:8233"]
    # A file holding the keys in FLEXSF_ENCRYPTION_KEYS' format instead (compose: created by flexsf-setup).
    flexsf_encryption_keys_file: Path | None = None
    # The bearer token every call to `flexsf codec-server` must carry; the codec server does not start without it.
    flexsf_codec_token: SecretStr | None = None

    @field_validator("flexsf_gateway_metrics_address", mode="before")
    @classmethod
    def _host_port(cls, v):
        if isinstance(v, str):
            v = v.strip()
            if not v:
                return None
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError("must be host:port, e.g. 0.0.0.0:9465")
        return v

    @field_validator("flexsf_encryption_keys_file", mode="before")
    @classmethod
    def _blank_file_is_unset(cls, v):
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator("flexsf_encryption_keys_file")
    @classmethod
    def _valid_key_file(cls, v: Path | None) -> Path | None:
        if v is not None:
            from flexsf.codec import read_key_file

            read_key_file(v)  # EncryptionKeyError names the file and the entry, never a key
        return v

    @field_validator("flexsf_codec_token")
    @classmethod
    def _long_codec_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().strip()) < 16:
            raise ValueError(
                "is shorter than 16 characters; generate one: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return v

    @model_validator(mode="after")
    def _one_source_of_keys(self) -> Settings:
        if self.flexsf_encryption_keys is not None and self.flexsf_encryption_keys_file is not None:
            raise ValueError("FLEXSF_ENCRYPTION_KEYS and FLEXSF_ENCRYPTION_KEYS_FILE are both set; set one")
        return self

    @field_validator("flexsf_encryption_keys", mode="before")
    @classmethod
    def _blank_keys_are_unset(cls, v):
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator("flexsf_encryption_keys")
    @classmethod
    def _valid_keys(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            from flexsf.codec import parse_keys

            parse_keys(v.get_secret_value())  # EncryptionKeyError (a ValueError) names the entry, never the key
        return v

    @field_validator("flexsf_codec_cors_origins", mode="before")
    @classmethod
    def _codec_origins(cls, v):
        if isinstance(v, str) and not v.strip().startswith("["):
            return [part.strip().rstrip("/") for part in v.split(",") if part.strip()]
        return v

    def encryption_keys(self):
        """The parsed `FLEXSF_ENCRYPTION_KEYS` or `FLEXSF_ENCRYPTION_KEYS_FILE` (`flexsf.codec.EncryptionKeys`), or
        None when encryption is off."""
        from flexsf.codec import parse_keys, read_key_file

        if self.flexsf_encryption_keys_file is not None:
            return read_key_file(self.flexsf_encryption_keys_file)
        if self.flexsf_encryption_keys is None:
            return None
        return parse_keys(self.flexsf_encryption_keys.get_secret_value())

    @field_validator(
        "salesforce_client_secret",
        "salesforce_password",
        "twilio_auth_token",
        "twilio_api_secret",
        "flexsf_codec_token",
    )
    @classmethod
    def _no_placeholders(cls, v: SecretStr | None, info) -> SecretStr | None:
        return _refuse_placeholder(v, info.field_name.upper())

    @field_validator(
        "flexsf_activity_external_id_field",
        "flexsf_activity_topics_field",
        "flexsf_activity_sentiment_field",
        "flexsf_activity_type",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, v):
        # `FIELD=` in an env file means "no such field", not a field named "".
        if isinstance(v, str) and not v.strip():
            return None
        return v.strip() if isinstance(v, str) else v

    @field_validator("flexsf_trusted_proxies", mode="before")
    @classmethod
    def _proxy_networks(cls, v):
        import ipaddress

        if isinstance(v, str) and not v.strip().startswith("["):
            v = [part.strip() for part in v.split(",") if part.strip()]
        for entry in v or []:
            try:
                ipaddress.ip_network(str(entry).strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
        return [str(entry).strip() for entry in v or []]

    @field_validator("flexsf_public_base_url", mode="before")
    @classmethod
    def _public_base_url(cls, v):
        # Signatures cover base + path (+ query): a trailing slash, a path with a query, or no scheme would never match.
        if isinstance(v, str):
            v = v.strip().rstrip("/")
            if not v:
                return None
            from urllib.parse import urlsplit

            parts = urlsplit(v)
            if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
                raise ValueError("must be the URL Twilio calls, such as https://flexsf.example.com")
        return v

    @field_validator("flexsf_search_objects", "flexsf_cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, v):
        if isinstance(v, str) and not v.strip().startswith("["):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @field_validator("flexsf_dial_allowed_countries", mode="before")
    @classmethod
    def _dial_countries(cls, v):
        from flexsf.dial_policy import region_codes

        if isinstance(v, str) and not v.strip().startswith("["):
            v = [part for part in v.split(",") if part.strip()]
        return region_codes(str(part) for part in v or [])

    @field_validator("flexsf_search_no_match_pop")
    @classmethod
    def _no_match_pop(cls, v: str) -> str:
        from flexsf.no_match_pop import NoMatchPop

        return str(NoMatchPop.parse(v))

    @field_validator("flexsf_default_region")
    @classmethod
    def _region(cls, v: str) -> str:
        from flexsf.dial_policy import region_codes

        return region_codes([v])[0]

    @field_validator("salesforce_jwt_audience", mode="before")
    @classmethod
    def _audience_url(cls, v):
        if isinstance(v, str):
            v = v.strip().rstrip("/")
            if not v:
                return None
            if not v.startswith(("https://", "http://")):
                raise ValueError("must be a URL such as https://test.salesforce.com")
        return v

    @field_validator("flexsf_temporal_ui_url", mode="before")
    @classmethod
    def _ui_url(cls, v):
        # Links are built as base + "/namespaces/…": a bare host or a trailing slash would make them wrong.
        if isinstance(v, str):
            v = v.strip().rstrip("/")
            if not v:
                return None
            if not v.startswith(("https://", "http://")):
                raise ValueError("must be a URL such as http://127.0.0.1:8233 or https://cloud.temporal.io")
        return v

    @field_validator("salesforce_private_key_file", "salesforce_ca_bundle")
    @classmethod
    def _file_exists(cls, v: Path | None, info) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{info.field_name.upper()} points at a file that does not exist")
        return v

    @model_validator(mode="after")
    def _salesforce_flow_fits_the_token_url(self) -> Settings:
        if not self.salesforce_client_id:
            return self
        from flexsf.salesforce_client import grant_type_for, login_host_refusal

        grant = grant_type_for(
            username=self.salesforce_username,
            private_key_file=self.salesforce_private_key_file,
            client_secret=self.salesforce_client_secret,
            password=self.salesforce_password,
        )
        refusal = login_host_refusal(self.salesforce_token_url, grant)
        if refusal:
            raise ValueError(refusal)
        return self

    @model_validator(mode="after")
    def _twilio_auth_complete(self) -> Settings:
        if self.twilio_api_key and not self.twilio_api_secret:
            raise ValueError("TWILIO_API_KEY is set without TWILIO_API_SECRET")
        return self

    @property
    def salesforce_configured(self) -> bool:
        return bool(self.salesforce_client_id)

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and (self.twilio_auth_token or self.twilio_api_key))

    def task_policy_defaults(self) -> dict[str, Any]:
        """The worker's part of every task's `TaskPolicy` (flags come from Flex): timers and step options. A setting
        a workflow step needs goes here and into `flexsf.models.TaskPolicy` under the same key."""
        return {
            "selection_timeout": timedelta(seconds=self.flexsf_selection_timeout_s),
            "notes_grace": timedelta(seconds=self.flexsf_notes_grace_s),
            "lost_event_window": timedelta(seconds=self.flexsf_lost_event_window_s),
            "repair_window": timedelta(seconds=self.flexsf_repair_window_s),
            "history_events_limit": self.flexsf_history_events_limit,
            "api_budget_retry": timedelta(seconds=self.flexsf_api_budget_retry_s),
            "log_unhandled_tasks": self.flexsf_log_unhandled_tasks,
        }


class ConfigurationError(RuntimeError):
    """Bad or missing configuration; the message names each setting and what is wrong, never its value."""


def _problem(err: Any) -> str:
    """One line: `SETTING: what is wrong`; a check across settings already starts with the setting it names."""
    cause = (err.get("ctx") or {}).get("error")
    message = str(cause) if err["type"] == "value_error" and cause is not None else err["msg"]
    setting = "__".join(str(part) for part in err["loc"]).upper()
    return f"{setting}: {message}" if setting else message


def load_settings(_settings_cls: type[Settings] | None = None, **overrides) -> Settings:
    from pydantic import ValidationError

    try:
        return (_settings_cls or Settings)(**overrides)
    except ValidationError as exc:
        # pydantic's own message quotes the input value, which may be a secret: name the setting only.
        problems = [_problem(err) for err in exc.errors()]
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def settings_from_env(env: Mapping[str, str], **overrides) -> Settings:
    """Settings as if `env` were added to the process environment, without touching `os.environ`.

    Changing the environment of a process whose other threads read it (OpenSSL, the resolver, Temporal's core)
    can crash it inside glibc; the dev stack and the tests build settings for in-process components this way.
    """
    environ = {**os.environ, **env}

    class _MappingSource(EnvSettingsSource):
        def _load_env_vars(self):
            return parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

    class _FromMapping(Settings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):
            return init_settings, _MappingSource(settings_cls), dotenv_settings

    return load_settings(_FromMapping, **overrides)
