"""What every config section shares: the model settings, field types and rule errors.

A section is a pydantic model with `extra="forbid"` (an unknown key is an error), strict
types (a string is not a number, a number is not a bool; an integer is accepted where a
number is expected), no NaN or infinity, and validation on assignment (`cam.loop = True`
is checked like the file is).

Rules that involve more than one key are model validators. They collect every broken
rule of their model and raise them together (`Problems`), so that a file with several
mistakes gets all of them in one go; loader.py turns them into one line each.

Checks against the file system (a camera's video file, the model, TLS files) need to
know where the asset cache is and whether files are to be checked at all: that comes in
the validation context (`FileCheck`), given by loader.load(). Without a context they
are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo
from pydantic.functional_validators import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    """Base of every config model."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,  # no "1" for 1, no 1 for true; an int is still fine for a float
        validate_assignment=True,  # cli.py: `cam.loop = True` is validated too
        allow_inf_nan=False,  # .nan and .inf are refused, naming the key
        hide_input_in_errors=True,  # never repeat what may be a password in an exception
    )


# -- documentation hints --------------------------------------------------------------


class DocHints:
    """How docs/config.md shows a key when its type or default needs words, not values.

    Given to Field as json_schema_extra: pydantic calls it with the key's JSON Schema,
    which it leaves alone, so the hints stay out of `appliance config schema`.
    """

    def __init__(self, type: str | None = None, default: str | None = None):
        self.type, self.default = type, default

    def __call__(self, schema: dict[str, Any]) -> None:
        pass


def key(default: Any = ..., doc: str = "", *, lo: float | None = None, hi: float | None = None,
        factory: Any = None, type: str | None = None, shown: str | None = None) -> Any:
    """A config key: default (or factory), range lo..hi, its docs/config.md text, and
    optionally the words docs/config.md shows for its type and default."""
    extra = DocHints(type, shown) if type is not None or shown is not None else None
    if factory is not None:
        return Field(default_factory=factory, ge=lo, le=hi, description=doc, json_schema_extra=extra)
    return Field(default, ge=lo, le=hi, description=doc, json_schema_extra=extra)


# -- field types ------------------------------------------------------------------------


def _non_empty(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty_string", "expected a non-empty string, got {got}",
                                  {"got": repr(value)})
    return value


def _empty_is_unset(value: Any) -> Any:
    # "" reads as unset (null), like leaving the key out: older `config check` output
    # printed unset keys as ''.
    return None if isinstance(value, str) and value == "" else value


Text = Annotated[str, AfterValidator(_non_empty)]
"""A non-empty string."""

OptionalText = Annotated[Optional[Text], BeforeValidator(_empty_is_unset)]
"""A non-empty string, or unset: None (null in YAML; "" reads as null)."""

Secret = Annotated[Optional[SecretStr], BeforeValidator(_empty_is_unset)]
"""A secret string (str(), repr() and exceptions show it masked), or unset (None)."""


def secret_value(value: SecretStr | None) -> str:
    """The plain text of a secret key; "" when unset."""
    return value.get_secret_value() if value is not None else ""


# -- rules ----------------------------------------------------------------------------


class Problems:
    """The broken rules of one model, raised together as one pydantic error.

    Keys are relative to the model the validator belongs to ("schedule[1].at",
    "tls.key_file", "" for the model itself); loader.py prefixes the model's place.
    """

    TYPE = "config_rules"

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def raise_any(self) -> None:
        if self.items:
            detail = "; ".join(f"{k}: {m}" if k else m for k, m in self.items)
            raise PydanticCustomError(self.TYPE, "{detail}", {"detail": detail, "errors": tuple(self.items)})


def join_key(base: str, sub: str) -> str:
    """`cameras` + `[1].id` -> `cameras[1].id`; `uplink` + `tls.ca_file` -> `uplink.tls.ca_file`."""
    if not sub:
        return base
    if not base or sub.startswith("["):
        return base + sub
    return f"{base}.{sub}"


# -- file checks ------------------------------------------------------------------------

FileMode = Literal["error", "warn"]


@dataclass
class FileCheck:
    """The validation context for checks against files: where the asset cache is, and
    whether a missing file is an error (`appliance run`, `appliance config check`) or a
    warning (`appliance config check --no-files`: the file is on the device, not here).

    Warnings collect in `warnings` as (key, message)."""

    assets_dir: Path
    mode: FileMode = "error"
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def of(info: ValidationInfo) -> "FileCheck | None":
        ctx = info.context
        check = ctx.get("files") if isinstance(ctx, dict) else None
        return check if isinstance(check, FileCheck) else None

    def warn(self, key: str, message: str) -> None:
        self.warnings.append((key, message))

    def missing(self, problems: Problems, key: str, message: str) -> None:
        """A file that is not here: an error, or with --no-files a warning."""
        if self.mode == "error":
            problems.add(key, message)
        else:
            self.warn(key, f"{message} (--no-files: it must exist on the device)")


def readable(path: str) -> str | None:
    """Why the file at `path` cannot be read, or None when it can."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    return None
