"""`web`: the dashboard, /healthz and /metrics (web/, docs/dashboard.md)."""
from __future__ import annotations

from pydantic import SecretStr, field_validator
from pydantic_core import PydanticCustomError

from appliance.config.base import Secret, Section, Text, key


def is_password_hash(text: str) -> bool:
    """The form `appliance passwd` writes (werkzeug: method:params$salt$hash)."""
    return text.split(":", 1)[0] in ("scrypt", "pbkdf2") and text.count("$") == 2


class WebConfig(Section):
    enabled: bool = key(True, doc="serve the dashboard, its JSON API, `/healthz` and `/metrics`")
    host: Text = key(
        "0.0.0.0", doc="address to listen on once a password is set. **With no password the dashboard "
                       "listens on `127.0.0.1` only, whatever this says**")
    port: int = key(
        8080, lo=0, hi=65535,
        doc="TCP port; `0` picks a free one (logged). `appliance run --web-port N` or `APPLIANCE_WEB_PORT` "
            "overrides it")
    password_hash: Secret = key(
        None, doc="salted scrypt hash of the dashboard password, written by `appliance passwd --config "
                  "FILE`; never write a password here. Masked wherever the config is shown")
    stale_after_s: float = key(
        10.0, lo=1.0, doc="`/healthz` answers 503 when no frame has left the tracker for this long")

    @field_validator("password_hash")
    @classmethod
    def _a_hash(cls, value: SecretStr | None) -> SecretStr | None:
        # The message does not repeat the value: it may be a password written here by mistake.
        if value is not None and not is_password_hash(value.get_secret_value()):
            raise PydanticCustomError(
                "password_hash", "not a hash written by 'appliance passwd' (set the password again with it)")
        return value
