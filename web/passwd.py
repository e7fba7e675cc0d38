"""`appliance passwd`: set the dashboard password, keeping only its salted hash.

The hash goes into web.password_hash of the YAML config file, edited by web/configfile.py:
round-trip, so the other keys, their order and the comments stay as they were, and
validated like any config before it replaces the file (atomically, keeping its
permissions), so a mistake never leaves a broken config.
"""
from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TextIO

from ruamel.yaml.comments import CommentedMap

from appliance.errors import ApplianceError
from web import configfile
from web.auth import hash_password

MIN_LENGTH = 8


def read_password(from_stdin: bool, stdin: TextIO = sys.stdin) -> str:
    """From one line of stdin (for provisioning scripts), else asked twice on the terminal."""
    if from_stdin:
        password = stdin.readline().rstrip("\r\n")
    else:
        if not stdin.isatty():
            raise ApplianceError("passwd: standard input is not a terminal; use --password-stdin")
        password = getpass.getpass("New dashboard password: ")
        if getpass.getpass("Again: ") != password:
            raise ApplianceError("passwd: the two passwords differ; nothing changed")
    if len(password) < MIN_LENGTH:
        raise ApplianceError(f"passwd: the password needs at least {MIN_LENGTH} characters; nothing changed")
    return password


def write_password_hash(path: Path, password_hash: str) -> None:
    """Set web.password_hash in the YAML file at `path` (created if missing)."""
    def change(data: CommentedMap) -> None:
        web = data.get("web")
        if web is None:
            data["web"] = web = CommentedMap()
        elif not isinstance(web, dict):
            raise ApplianceError(f"config {path}: web: expected a mapping, got {type(web).__name__}")
        web["password_hash"] = password_hash

    configfile.edit(path, change, create=True)


def set_password(path: Path, from_stdin: bool = False) -> str:
    """Ask for a password, store its hash in the config file; returns what to tell the user."""
    write_password_hash(path, hash_password(read_password(from_stdin)))
    return (f"web.password_hash written to {path}; restart the appliance to apply it "
            f"(the dashboard then listens on web.host and asks for this password)")
