"""`appliance passwd`: set the dashboard password, keeping only its salted hash.

The hash goes into web.password_hash of the YAML config file. The file is edited with
ruamel.yaml's round-trip mode, so the other keys, their order and the comments stay as
they were. The result is validated like any config before it replaces the file
(atomically, keeping its permissions), so a mistake never leaves a broken config.
"""
from __future__ import annotations

import getpass
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from appliance import config as config_mod
from appliance.config.loader import YamlProblem, read_text
from appliance.errors import ApplianceError
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
    try:
        text = read_text(path) if path.exists() else ""
    except OSError as e:
        raise ApplianceError(f"config {path}: cannot read: {e.strerror or e}") from None
    except YamlProblem as e:
        raise ApplianceError(f"config {path}: {'; '.join(e.lines)}") from None
    rt = YAML()  # round-trip: keeps comments, key order and quoting
    rt.preserve_quotes = True
    rt.width = 4096  # the hash stays on one line
    try:
        data = rt.load(text) if text.strip() else None
        seq_offset = (load_yaml_guess_indent(text)[2] or 0) if text.strip() else 0
    except YAMLError as e:
        raise ApplianceError(f"config {path}: invalid YAML: {e}") from None
    # Mappings indented by 2; list dashes placed the way the file had them ("  - x" or "- x").
    rt.indent(mapping=2, sequence=2 + seq_offset, offset=seq_offset)
    if data is None:
        data = CommentedMap()
    if not isinstance(data, dict):
        raise ApplianceError(f"config {path}: expected a mapping at the top, got {type(data).__name__}")
    web = data.get("web")
    if web is None:
        data["web"] = web = CommentedMap()
    elif not isinstance(web, dict):
        raise ApplianceError(f"config {path}: web: expected a mapping, got {type(web).__name__}")
    web["password_hash"] = password_hash

    out = io.StringIO()
    rt.dump(data, out)
    new_text = out.getvalue()
    config_mod.from_text(new_text, str(path))  # the whole file must still be valid

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            st = path.stat()
            os.chmod(tmp, st.st_mode & 0o7777)
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                pass  # not root: the file stays ours, which it already was to be writable
        else:
            os.chmod(tmp, 0o640)  # holds the password hash: not for every local user
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ApplianceError(f"config {path}: cannot write: {e.strerror or e}") from None


def set_password(path: Path, from_stdin: bool = False) -> str:
    """Ask for a password, store its hash in the config file; returns what to tell the user."""
    write_password_hash(path, hash_password(read_password(from_stdin)))
    return (f"web.password_hash written to {path}; restart the appliance to apply it "
            f"(the dashboard then listens on web.host and asks for this password)")
