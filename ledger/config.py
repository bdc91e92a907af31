"""Settings: the spec's session options, plus where the ledger lives.

The ``session`` section is the domain's :class:`SessionPolicy`
(:mod:`session_ledger.ledger.domain.policy`): loaded here, at the edge, and
handed to the domain as a plain value (the domain never imports settings).

Loaded by pydantic-settings from, in order of precedence: explicit keyword
arguments, environment variables (``SESSION_LEDGER_`` prefix, ``__`` between
nested names, e.g. ``SESSION_LEDGER_SESSION__EXPIRES_IN=3600``), a TOML file
(``SESSION_LEDGER_CONFIG_FILE``, default ``./session-ledger.toml`` when
present), then the defaults below. Durations are in seconds, as in the spec.

List settings (``StrList``, ``SecretList``, ``RuleList``) read from the environment
as a JSON array, a comma-separated list or a single value. Every failure to load, a bad value,
unreadable TOML or a missing file, is one ConfigError naming the setting.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from session_ledger.ledger.domain.errors import ConfigError
from session_ledger.ledger.domain.policy import PositiveSeconds, SessionPolicy


def _split_list(value: Any) -> Any:
    """A list setting's text: a JSON array, else comma-separated items (one
    item is a single value). Items containing a comma need the JSON form."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            decoded = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not a valid JSON array ({exc})") from None
        if not isinstance(decoded, list):
            raise ValueError("not a JSON array")
        return decoded
    return [item.strip() for item in text.split(",") if item.strip()]


#: Every list setting is one of these, or ``RuleList`` (NoDecode: pydantic-settings
#: would insist on JSON; ``_split_list`` takes JSON, commas or a single value).
StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_list)]

#: A secret shorter than this, or with fewer distinct characters, is refused.
MIN_SECRET_LENGTH = 32
MIN_SECRET_DISTINCT = 10
#: The one line that says what to set when no secret is configured.
MISSING_SECRETS = (
    "no secrets configured: set SESSION_LEDGER_SECRETS to one or more random strings "
    "of 32+ characters, newest first, comma-separated or as a JSON list "
    "(e.g. from openssl rand -base64 32)"
)


def weak_secret(secret: str) -> bool:
    """Too short, or too little variety (one repeated character, a short pattern)."""
    return len(secret) < MIN_SECRET_LENGTH or len(set(secret)) < MIN_SECRET_DISTINCT


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CookieOptions(_Section):
    http_only: bool = True
    same_site: Literal["lax", "strict", "none"] = "lax"
    path: str = "/"
    #: None: secure in production or when the base URL is https.
    secure: bool | None = None
    domain: str | None = None


class CookieSettings(_Section):
    name: Annotated[str, Field(min_length=1, pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")] = (
        "better-auth.session-token"
    )
    options: CookieOptions = CookieOptions()
    #: ``__Host-`` instead of ``__Secure-`` on every cookie name: browsers
    #: then refuse the cookie from any other host (a sibling subdomain cannot
    #: set or shadow it). Needs secure cookies, path "/" and no domain.
    host_prefix: bool = False


class CookieCacheSettings(_Section):
    enabled: bool = True
    max_age: PositiveSeconds = 300


class RedisSettings(_Section):
    #: redis://host:port/db; None = no Redis secondary storage.
    url: str | None = None
    prefix: str = "better-auth:"
    #: Upper bound on a cached session's TTL; None = time to expiry.
    ttl: PositiveSeconds | None = None


class WorkerSettings(_Section):
    expiry_interval: PositiveSeconds = 60
    expiry_batch_size: Annotated[int, Field(gt=0, le=100_000)] = 500
    projector_poll_interval: Annotated[float, Field(gt=0)] = 1.0
    #: How often the worker records a ledger digest (tamper evidence).
    digest_interval: PositiveSeconds = 300
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None


# ------------------------------------------------- abuse resistance (issue 15)


class RateLimitRule(_Section):
    """At most ``max`` requests in any ``window`` seconds (a moving window).

    Written ``{window = 60, max = 5}`` or, as text, ``MAX/WINDOW``: ``5/60``
    (what a list of rules in one environment variable uses: ``5/60,10/900``).
    """

    window: PositiveSeconds
    max: Annotated[int, Field(gt=0)]

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        count, slash, window = value.partition("/")
        if slash and count.strip().isdigit() and window.strip().isdigit():
            return {"max": int(count), "window": int(window)}
        raise ValueError(f"{value!r} is not MAX/WINDOW (e.g. 5/60: 5 in any 60 seconds)")


#: A list of rules: a JSON array (of objects or texts), ``5/60,10/900``, or one rule.
RuleList = Annotated[list[RateLimitRule], NoDecode, BeforeValidator(_split_list)]


def _default_rules() -> dict[str, RateLimitRule | None]:
    # BetterAuth's special rules: /sign-in* and /sign-up* at 3 per 10 s.
    return {
        "/sign-in/*": RateLimitRule(window=10, max=3),
        "/sign-up/*": RateLimitRule(window=10, max=3),
    }


def _default_account_limits() -> list[RateLimitRule]:
    # Tiers: the longer the run of failures, the longer the wait.
    return [RateLimitRule(window=60, max=5), RateLimitRule(window=15 * 60, max=10)]


class RateLimitSettings(_Section):
    """Request limits per client IP (BetterAuth's ``rateLimit``) and failed
    sign-ins per account."""

    #: None: on in production, off in development and test (as in BetterAuth).
    enabled: bool | None = None
    #: Every /api/auth route: ``max`` requests per ``window`` seconds per IP and path.
    window: PositiveSeconds = 60
    max: Annotated[int, Field(gt=0)] = 100
    #: Paths under /api/auth (exact, or a prefix ending in ``*``) with their
    #: own rule instead of window / max; null exempts a path.
    custom_rules: dict[str, RateLimitRule | None] = Field(default_factory=_default_rules)
    #: Where counters live: None = Redis when ``redis.url`` is set (shared by
    #: every process), else memory (this process only).
    storage: Literal["memory", "redis"] | None = None
    #: With Redis: share the default rule through it too, counted in each
    #: process and sent in batches every ``flush_interval`` seconds (no
    #: round trip on a request; N processes admit fewer than max + N * max/10
    #: per window); false: in each process's memory only (the default limit
    #: then holds per process). The strict rules always use ``storage``.
    shared_default_rule: bool = True
    #: How often each process sends its default-rule counts to Redis (seconds).
    flush_interval: Annotated[float, Field(gt=0, le=10)] = 0.2
    #: IPv6 clients share one counter per network of this prefix length.
    ipv6_subnet: Annotated[int, Field(ge=1, le=128)] = 64
    #: Failed sign-ins per account (email), whatever the IP: past a tier,
    #: the account waits until that tier's window frees (a throttle, never
    #: a lockout). A success clears them.
    account_failures: RuleList = Field(default_factory=_default_account_limits)
    #: Throttled attempts recorded in the ledger per account and window;
    #: the others are only counted (metric).
    throttled_recorded: RateLimitRule = RateLimitRule(window=15 * 60, max=1)


class PasswordSettings(_Section):
    """Password policy and hashing (the built-in user store)."""

    #: BetterAuth's minPasswordLength / maxPasswordLength.
    min_length: Annotated[int, Field(ge=1, le=128)] = 8
    max_length: Annotated[int, Field(ge=8, le=1024)] = 128
    #: zxcvbn score (0-4) a new password must reach.
    min_score: Annotated[int, Field(ge=0, le=4)] = 2
    #: argon2id parameters: OWASP's first recommended set (19 MiB, 2 passes,
    #: 1 lane). Hashes made with other parameters are redone at sign-in.
    hash_memory_kib: Annotated[int, Field(ge=8, le=4 * 1024 * 1024)] = 19 * 1024
    hash_time_cost: Annotated[int, Field(ge=1, le=100)] = 2
    hash_parallelism: Annotated[int, Field(ge=1, le=64)] = 1
    #: Hashes computed at once (threads); None = the number of CPUs.
    hash_concurrency: Annotated[int, Field(ge=1, le=256)] | None = None
    #: Requests that may wait for a hashing thread; past it, or after
    #: ``hash_wait`` seconds, 503 SERVER_BUSY.
    hash_queue: Annotated[int, Field(ge=0, le=10_000)] = 16
    hash_wait: Annotated[float, Field(gt=0, le=60)] = 2.0

    @model_validator(mode="after")
    def _check(self) -> PasswordSettings:
        if self.min_length > self.max_length:
            raise ValueError("min_length must not exceed max_length")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SESSION_LEDGER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./session-ledger.db"
    base_url: str = "http://localhost:8000"
    #: HMAC secrets: sign with the first, accept any (rotation). >= 32 characters each.
    #: None configured: see api.signing_secrets (only a loopback development
    #: server runs then, on a secret it generates).
    secrets: SecretList = Field(default_factory=list)
    trusted_origins: StrList = Field(default_factory=list)
    trusted_proxies: StrList = Field(default_factory=list)
    #: /docs, /redoc and /openapi.json; None = on except in production.
    docs: bool | None = None
    store_tokens: bool = False
    #: Fernet key (urlsafe base64, 32 bytes) for provider tokens at rest.
    encryption_key: SecretStr | None = None
    session: SessionPolicy = SessionPolicy()
    cookie: CookieSettings = CookieSettings()
    cookie_cache: CookieCacheSettings = CookieCacheSettings()
    redis: RedisSettings = RedisSettings()
    worker: WorkerSettings = WorkerSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    password: PasswordSettings = PasswordSettings()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for secret in self.secrets:
            if weak_secret(secret.get_secret_value()):
                raise ValueError(
                    f"secrets: each secret must be at least {MIN_SECRET_LENGTH} characters "
                    f"of random text with at least {MIN_SECRET_DISTINCT} distinct characters "
                    "(e.g. openssl rand -base64 32)"
                )
        if self.environment == "production" and not self.secrets:
            raise ValueError(f"secrets: {MISSING_SECRETS}")
        cookie = self.cookie
        if cookie.host_prefix and not (
            self.secure_cookies and cookie.options.path == "/" and cookie.options.domain is None
        ):
            raise ValueError(
                "cookie.host_prefix: needs secure cookies (production or an https base_url), "
                "cookie.options.path / and no cookie.options.domain"
            )
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "database_url: use sqlite+aiosqlite:///path or postgresql+asyncpg://..."
            )
        return self

    @property
    def secret_values(self) -> list[str]:
        """The configured secrets (possibly none: see api.signing_secrets)."""
        return [s.get_secret_value() for s in self.secrets]

    @property
    def docs_enabled(self) -> bool:
        return self.docs if self.docs is not None else self.environment != "production"

    @property
    def rate_limit_enabled(self) -> bool:
        enabled = self.rate_limit.enabled
        return self.environment == "production" if enabled is None else enabled

    @property
    def rate_limit_storage(self) -> Literal["memory", "redis"]:
        """Where rate-limit counters live: Redis (shared by every process)
        when configured, else each process's memory."""
        return self.rate_limit.storage or ("redis" if self.redis.url else "memory")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def secure_cookies(self) -> bool:
        if self.cookie.options.secure is not None:
            return self.cookie.options.secure
        return self.environment == "production" or self.base_url.startswith("https://")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = Path(os.environ.get("SESSION_LEDGER_CONFIG_FILE", "session-ledger.toml"))
        if toml_path.is_file():
            try:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {toml_path}: invalid TOML: {exc}") from None
            except OSError as exc:
                raise ConfigError(f"config file {toml_path}: {exc.strerror or exc}") from None
        elif "SESSION_LEDGER_CONFIG_FILE" in os.environ:
            raise ConfigError(
                f"config file {toml_path} does not exist (SESSION_LEDGER_CONFIG_FILE)"
            )
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build settings; a bad value raises ConfigError naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if where:
            message = f"{where}: {message}"
        raise ConfigError(f"invalid setting {message}") from None
    except SettingsError as exc:
        # A structured setting (a section) whose environment value is not JSON.
        field = re.search(r'field "([^"]+)"', str(exc))
        name = field.group(1) if field else "?"
        raise ConfigError(
            f"invalid setting {name}: SESSION_LEDGER_{name.upper()} must be JSON "
            f"(or set its keys one by one: SESSION_LEDGER_{name.upper()}__KEY)"
        ) from None
