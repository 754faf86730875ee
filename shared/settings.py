"""The one home of configuration: defaults, then a config file, then ``VIDEOCALL_*``
environment variables, then command-line flags (highest wins).

Both processes read the same model, so a value means the same thing in the signalling
node and in a relay worker. ICE settings keep Janus's names (``ice_enforce_list``,
``nat_1_1_mapping``, ``rtp_port_range``) so an operator coming from Janus finds them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

#: Characters a relay_secret must have at least (a short one is guessed offline from one hello).
MIN_RELAY_SECRET = 16

#: A list read from one env var or flag as "a,b,c" (or a JSON list).
StrList = Annotated[list[str], NoDecode]


def _split_list(value: Any) -> Any:
    """Accept ``"a,b"`` (env/flags, as Janus's ``ice_enforce_list``) as well as a real list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can set. Defaults work on a laptop."""

    # hide_input_in_errors: a refused value is never echoed, as it may be one of the secrets.
    model_config = SettingsConfigDict(
        env_prefix="VIDEOCALL_", extra="forbid", validate_default=True, hide_input_in_errors=True
    )

    # --- signalling ---------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the WebSocket/HTTP server binds.")
    port: int = Field(8188, ge=0, le=65535, description="Port of the WebSocket/HTTP server (Janus's 8188).")
    session_timeout: float = Field(
        60.0, ge=0, description="Seconds without a request before a session expires (0 = never)."
    )
    reclaim_session_timeout: float = Field(
        30.0, ge=0, description="Seconds the sessions of a WebSocket that broke (closed without its closing handshake) are kept "
        "(handles, names, the call's media) for a `claim` from a new connection, their events held "
        "meanwhile (0 = destroyed at once, as Janus's default; see the README for why 30).",
    )
    base_path: str = Field(
        "/janus", description="Path of the Janus HTTP transport (Janus's base_path): POST <base>, GET <base>/<session>...",
    )
    long_poll_wait: float = Field(
        30.0, gt=0, le=300, description="Seconds an HTTP long poll waits for an event before answering "
        "{\"janus\": \"keepalive\"} (Janus: 30).",
    )
    max_held_events: int = Field(
        256, ge=1, description="Events a session without a transport holds (a dropped WebSocket waiting "
        "for a claim, an HTTP session between long polls); past it the oldest is dropped, logged and counted.",
    )
    ring_timeout: float = Field(
        60.0, ge=0, description="Seconds a call may ring unanswered before it ends for both (0 = never, as Janus)."
    )
    max_message_size: int = Field(
        256 * 1024, ge=1024, description="Largest WebSocket frame accepted from a client, in bytes."
    )
    websocket_compression: bool = Field(
        False, description="Accept permessage-deflate from WebSocket clients that offer it (browsers do). "
        "Off, as Janus: it costs CPU per message and saves bytes only on slow links.",
    )
    max_json_depth: int = Field(32, ge=2, le=512, description="Deepest JSON nesting accepted.")
    max_sessions_per_connection: int = Field(16, ge=1)
    max_handles_per_session: int = Field(16, ge=1)
    max_pending_trickles: int = Field(
        128, ge=0, description="Candidates a handle may queue before it has a call leg."
    )
    node_id: str = Field("", description="Name of this signalling node (defaults to host:port).")

    # --- relay workers ------------------------------------------------------------------
    workers: int = Field(0, ge=0, description="Relay worker processes for `serve` (0 = one per core).")
    worker_addresses: StrList = Field(
        default_factory=list,
        description="Workers `signaling` connects to: unix:/path or tcp:host:port.",
    )
    ipc_dir: str = Field("", description="Directory for `serve`'s worker sockets (default: a temp dir).")
    ipc_timeout: float = Field(10.0, gt=0, description="Seconds a worker has to answer a request.")
    relay_secret: SecretStr = Field(
        SecretStr(""), description="Shared by a node and its workers: each proves it knows it when a channel "
        "opens (empty: not required; a worker on a non-loopback address refuses to start without one; "
        "`serve` makes one up for its own workers). Set it by VIDEOCALL_RELAY_SECRET or relay_secret_file, "
        "never by a flag. A secret: never logged nor shown.",
    )
    relay_secret_file: str = Field(
        "", description="File holding relay_secret (surrounding whitespace ignored), e.g. a Docker or "
        "Kubernetes secret; read at start-up.",
    )

    # --- the registry of usernames, shared by a fleet of signalling nodes ---------------------
    redis_url: str = Field(
        "",
        description="Redis holding the usernames of every signalling node, e.g. redis://host:6379/0 "
        "(empty: names live in this process only). Logged with its password masked.",
    )
    redis_key_prefix: str = Field(
        "videocall:", description="Start of every Redis key, so deployments or test runs can share one Redis."
    )
    registry_lease: float = Field(
        12.0, gt=0, description="Seconds a name outlives its node (renewed every third of it while the node is up)."
    )

    # --- ICE (Janus's names) ------------------------------------------------------------
    ice_enforce_list: StrList = Field(
        default_factory=list,
        description="Addresses or interface names the relay offers as host candidates "
        "(e.g. 127.0.0.1 for loopback tests). Empty: every non-loopback address.",
    )
    nat_1_1_mapping: str = Field("", description="Public address advertised instead of the host address (behind NAT).")
    rtp_port_range: str = Field("", description="UDP ports the relay may use, e.g. 20000-40000. Empty: any.")
    ice_servers: StrList = Field(
        default_factory=list,
        description="STUN/TURN URLs the relay uses. Empty by default: nothing is contacted.",
    )

    # --- recording (the relay workers write; Janus's `set` `record`/`filename`) ------------
    recordings_dir: str = Field(
        "recordings",
        description="Folder every recording is written in (created when needed; relative to the "
        "current directory). A `filename` is relative to it and can never leave it.",
    )

    # --- who may use the API (Janus's names; off by default, as in Janus) -----------------
    api_secret: SecretStr = Field(
        SecretStr(""), description="Every request must carry this `apisecret` (empty: not required). "
        "A secret: never logged nor shown.",
    )
    token_auth: bool = Field(False, description="Every request must carry a valid `token` (stored or signed).")
    token_auth_secret: SecretStr = Field(
        SecretStr(""), description="Key of signed tokens (<expiry>,janus,<plugins>:<HMAC-SHA1>); empty: stored tokens.",
    )
    token_store: str = Field(
        "", description="JSON file of the stored tokens (`videocall tokens`); empty: in memory only.",
    )

    # --- the Admin API (Janus's names; off unless admin_secret is set) -------------------------
    admin_secret: SecretStr = Field(
        SecretStr(""), description="Every Admin API request must carry this `admin_secret`; empty: no Admin API "
        "port at all. A secret: never logged nor shown; set it by VIDEOCALL_ADMIN_SECRET or the config file.",
    )
    admin_host: str = Field("127.0.0.1", description="Address the Admin API binds (loopback: operators on this machine).")
    admin_port: int = Field(7088, ge=0, le=65535, description="Port of the Admin API, HTTP and WebSocket (Janus's 7088).")
    admin_base_path: str = Field("/admin", description="Path of the Admin API's HTTP endpoints (Janus's admin_base_path).")

    # --- the front door: who may connect, how often, for how long (signaling/frontdoor.py) ---
    allowed_origins: StrList = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose pages may open the WebSocket, e.g. "
        "https://example.com. Empty: any, as Janus.",
    )
    allow_missing_origin: bool = Field(
        True, description="Accept WebSocket handshakes without an Origin header (scripts, janus-client; "
        "browsers always send one).",
    )
    trusted_proxies: StrList = Field(
        default_factory=list,
        description="Reverse proxies (addresses or CIDR blocks) whose X-Forwarded-For names the client. "
        "Empty: the peer address is the client.",
    )
    max_connections_per_address: int = Field(
        64, ge=0, description="Open connections one client address may hold (0 = no cap); more are refused with 429.",
    )
    create_rate: float = Field(10.0, ge=0, description="Sessions one address may create per second (0 = no limit).")
    create_burst: int = Field(20, ge=1, description="Sessions one address may create at once before create_rate applies.")
    register_rate: float = Field(10.0, ge=0, description="`register` requests per second per address (0 = no limit).")
    register_burst: int = Field(20, ge=1, description="`register` requests one address may send at once.")
    max_sessions: int = Field(100_000, ge=0, description="Sessions this node holds at most (0 = no cap); then 472.")
    idle_timeout: float = Field(
        30.0, ge=0, description="Seconds a connection without a session may stay silent before it is closed (0 = never).",
    )
    frame_timeout: float = Field(
        10.0, ge=0, description="Seconds one WebSocket frame may take to arrive (slowloris; 0 = no limit).",
    )
    handshake_timeout: float = Field(10.0, gt=0, description="Seconds the opening HTTP/WebSocket handshake may take.")

    # --- TLS on the API port: https:// and wss:// (signaling/tls.py) ----------------------
    tls_cert: str = Field("", description="PEM certificate (chain) served on the API port, with tls_key: "
                          "https:// and wss://. Reloaded on SIGHUP.")
    tls_key: str = Field("", description="PEM private key of tls_cert.")
    tls_self_signed: bool = Field(
        False, description="Serve https:// and wss:// with a certificate made at start for tls_host_names "
        "(kept in tls_dir and reused; its SHA-256 fingerprint is logged), e.g. for phones on the LAN.",
    )
    tls_host_names: StrList = Field(
        default_factory=list, description="Names and addresses the self-signed certificate is for "
        "(empty: this host's name, its LAN addresses, localhost and the loopback addresses).",
    )
    tls_dir: str = Field("", description="Folder of the self-signed certificate (empty: $XDG_STATE_HOME/videocall/tls, "
                         "else ~/.local/state/videocall/tls).")

    # --- misc ---------------------------------------------------------------------------
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")

    # --- operations: logs, drain -----------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        "text", description="text (for people), or json: one JSON object per line (for a log pipeline)."
    )
    drain_timeout: float = Field(
        60.0, ge=0, description="Seconds a SIGTERM'd node waits for its calls to end before it exits (0 = at once)."
    )

    @field_validator("ice_enforce_list", "worker_addresses", "ice_servers", "allowed_origins", "trusted_proxies",
                     "tls_host_names", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {item!r} is not an IP address or CIDR block") from None
        return value

    @field_validator("base_path", "admin_base_path")
    @classmethod
    def _base_path(cls, value: str, info: ValidationInfo) -> str:
        """A path like ``/janus``: the API's and the Admin API's HTTP paths live under it."""
        path = value.rstrip("/")
        parts = path.split("/")[1:]
        if not path.startswith("/") or not all(part and part.isascii() and part.isprintable() and "?" not in part
                                                and "#" not in part for part in parts) or not parts:
            raise ValueError(f"{info.field_name} must be a path like /janus, not {value[:80]!r} (and not /)")
        return path

    @field_validator("rtp_port_range")
    @classmethod
    def _port_range(cls, value: str) -> str:
        if value:
            port_range(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("relay_secret")
    @classmethod
    def _relay_secret(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < MIN_RELAY_SECRET:
            raise ValueError(f"relay_secret must be at least {MIN_RELAY_SECRET} characters")
        return value

    @model_validator(mode="after")
    def _relay_secret_from_file(self) -> Settings:
        if self.relay_secret_file:
            if self.relay_secret.get_secret_value():
                raise ValueError("set relay_secret or relay_secret_file, not both")
            try:
                text = Path(self.relay_secret_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ValueError(f"relay_secret_file {self.relay_secret_file}: {reason}") from None
            if len(text) < MIN_RELAY_SECRET:
                raise ValueError(f"relay_secret_file {self.relay_secret_file}: the secret must be at least "
                                 f"{MIN_RELAY_SECRET} characters")
            self.relay_secret = SecretStr(text)
        return self

    @model_validator(mode="after")
    def _tls(self) -> Settings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both, or neither")
        if self.tls_cert and self.tls_self_signed:
            raise ValueError("set tls_cert/tls_key or tls_self_signed, not both")
        return self

    @model_validator(mode="after")
    def _node(self) -> Settings:
        if not self.node_id:
            # In a fleet the id names this node to the others: the listening address (often
            # 0.0.0.0:8188 on every machine) would not tell two nodes apart, the host name does.
            host = socket.gethostname() if self.redis_url else self.host
            self.node_id = f"{host}:{self.port}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Given values (flags, and the config file's where the environment is silent: ``load``)
        # > environment > defaults. No .env or secrets folder is read.
        return (init_settings, env_settings)


def port_range(text: str) -> tuple[int, int]:
    """Parse ``"20000-40000"`` into a pair, refusing nonsense with a clear message."""
    try:
        low_text, high_text = text.split("-", 1)
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise ValueError(f"rtp_port_range must look like 20000-40000, not {text!r}") from None
    if not (1 <= low <= high <= 65535):
        raise ValueError(f"rtp_port_range {text!r} is not within 1-65535 with low <= high")
    return low, high


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file (by extension; TOML otherwise)."""
    file = Path(path)
    data = file.read_bytes()
    if file.suffix.lower() == ".json":
        loaded = json.loads(data)
    else:
        loaded = tomllib.loads(data.decode("utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{file}: the config file must hold a table/object of settings")
    return loaded


def load(config_file: str | Path | None = None, **flags: Any) -> Settings:
    """Build the settings: defaults < config file < environment < flags.

    ``flags`` holds only the options given on the command line (``None`` values are
    dropped so an absent flag never hides the environment).
    """
    given = {key: value for key, value in flags.items() if value is not None}
    from_file = read_config_file(config_file) if config_file else {}

    # The file ranks below the environment: it fills only what no VIDEOCALL_* variable sets.
    from_env = EnvSettingsSource(Settings)()
    below_env = {key: value for key, value in from_file.items() if key not in from_env}
    return Settings(**{**below_env, **given})
