"""The steps of `appliance provision`, in order (docs/installer-guide.md, "Provision"):

1. cameras: open each one (timeout), save a snapshot to look at;
2. detector: pick it for this platform (platform.py);
3. broker: check the TLS files (expiry, key match), optionally make a device key and CSR,
   then connect and do a round trip (the self-test's uplink check);
4. dashboard password and power profile;
5. write the config: validated first (files it names included), then replaced atomically,
   the previous file kept as config.yaml.bak;
6. enable and (re)start appliance.service (`systemctl enable`, `systemctl restart`);
7. run the self-test.

Every check that can fail on bad input runs before step 5, so a failure there leaves the
previous config as it was. When step 6 fails (the service does not start), the previous
config is put back (and the service restarted with it), the new one kept as
config.yaml.failed. A failed step prints what failed and how to fix it and the flow stops
with exit status 1. A self-test that finds problems (step 7) keeps the new config: it
validated and the service runs it; what failed is on site (a camera, the clock, heat).
Keys of the previous config that provision does not ask about (store, track, snapshots,
...) are kept when that config is valid.
"""
from __future__ import annotations

import grp
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import yaml

from appliance import config as config_mod
from appliance.config.loader import YamlProblem, parse_yaml, read_text
from appliance.config.replace import replace_config
from appliance.errors import ApplianceError
from appliance.provision import cameras as cam_mod
from appliance.provision import csr, platform
from appliance.provision.answers import Answers

log = logging.getLogger(__name__)

SERVICE = "appliance"
Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def run_command(cmd: list[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


class StepFailed(ApplianceError):
    def __init__(self, step: str, what: str, fix: str = ""):
        super().__init__(f"{step}: {what}")
        self.step, self.what, self.fix = step, what, fix
        self.restarted = False  # the service step: `systemctl restart` ran (and failed)


@dataclass
class Options:
    config_path: Path
    data_dir: Path
    assets_dir: Path
    start: bool = True
    selftest: bool = True
    timeout_s: float = 10.0
    root: Path = Path("/")  # where the platform is read from (tests: a fake tree)
    runner: Runner = run_command
    which: Callable[[str], str | None] = shutil.which


@dataclass
class Outcome:
    ok: bool
    config_written: bool = False  # the new config is in place
    rolled_back: bool = False  # it was, and the previous one went back (the service step failed)
    backup: Path | None = None
    snapshots: dict[str, Path] = field(default_factory=dict)
    failed_step: str | None = None
    selftest_ok: bool | None = None


class _Out:
    def __init__(self, out: TextIO):
        self.out = out

    def ok(self, step: str, text: str) -> None:
        print(f"  ok    {step}: {text}", file=self.out)

    def note(self, step: str, text: str) -> None:
        print(f"  note  {step}: {text}", file=self.out)

    def skip(self, step: str, text: str) -> None:
        print(f"  skip  {step}: {text}", file=self.out)

    def fail(self, step: str, what: str, fix: str) -> None:
        lines = what.splitlines() or [""]
        print(f"  FAIL  {step}: {lines[0]}", file=self.out)
        for line in lines[1:]:
            print(f"        {line}", file=self.out)
        if fix:
            print(f"        fix: {fix}", file=self.out)


def _split_fix(e: ApplianceError) -> tuple[str, str]:
    """An error whose message ends in `\\n  fix: ...` as (what, fix)."""
    text = str(e)
    what, sep, fix = text.partition("\n  fix: ")
    return what, fix if sep else ""


def _previous(path: Path, assets_dir: Path, out: _Out) -> dict[str, Any]:
    """The previous config's data when it is valid (kept under what provision sets), else {}."""
    if not path.exists():
        return {}
    try:
        config_mod.load(path, assets_dir, files="warn", warnings=[])
        data = parse_yaml(read_text(path))
    except (ApplianceError, OSError, YamlProblem) as e:
        out.note("config", f"the previous {path} is not valid ({len(str(e).splitlines())} problem(s)); "
                           "starting from the defaults (it is kept as the backup)")
        return {}
    return data if isinstance(data, dict) else {}


def _give_to_group(path: Path, like: Path, mode: int) -> None:
    """Root writes TLS files the service (user appliance) must read: group of the config dir."""
    os.chmod(path, mode)
    if os.geteuid() != 0:
        return
    try:
        gid = like.stat().st_gid if like.exists() else grp.getgrnam(SERVICE).gr_gid
        os.chown(path, 0, gid)
    except (KeyError, OSError):
        pass


def _give_to_owner(path: Path, like: Path) -> None:
    """Root-made files in the data dir go to its owner, so that the service can replace them."""
    if os.geteuid() != 0 or not path.exists():
        return
    try:
        st = like.stat()
        os.chown(path, st.st_uid, st.st_gid)
    except OSError:
        pass


def _cameras(a: Answers, opt: Options, out: _Out, outcome: Outcome) -> list[dict]:
    cams = []
    snapdir = opt.data_dir / "provision"
    for c in a.cameras:
        source = cam_mod.as_source(c.source)
        cams.append({"id": c.id, "source": source})
        if not c.test:
            out.skip(f"camera {c.id}", "not tested (test: false)")
            continue
        try:
            t = cam_mod.test_camera(c.id, source, snapdir, opt.timeout_s)
        except ApplianceError as e:
            what, fix = _split_fix(e)
            raise StepFailed(f"camera {c.id}", what.removeprefix(f"camera {c.id}: "), fix) from None
        _give_to_owner(snapdir, opt.data_dir)
        _give_to_owner(t.snapshot, opt.data_dir)
        outcome.snapshots[c.id] = t.snapshot
        out.ok(f"camera {c.id}", f"{t.source}: {t.width}x{t.height}, snapshot saved to {t.snapshot} (look at it)")
    return cams


def _uplink(a: Answers, opt: Options, out: _Out) -> dict:
    m = a.mqtt
    if m is None:
        out.skip("broker", "no MQTT broker: events stay on this device (uplink.enabled: false)")
        return {"enabled": False}
    cert_file, key_file = m.cert_file, m.key_file
    if m.generate_key:
        dk = csr.make_key_and_csr(a.device_id, opt.config_path.parent / "tls")
        _give_to_group(dk.key_file, opt.config_path.parent, 0o640)
        out.ok("device key", f"{'made' if dk.created else 'kept the existing'} {dk.key_file}; CSR (CN={a.device_id}) "
                             f"in {dk.csr_file}: have the fleet CA sign it")
        key_file = key_file or str(dk.key_file)
        if cert_file is None:
            crt = dk.key_file.with_suffix(".crt")
            if crt.exists():
                cert_file = str(crt)
            else:
                key_file = None  # no certificate yet: a key alone is refused by the config
                out.note("device key", f"no certificate yet: save the signed one as {crt} and run provision "
                                       "again to use it")
    if (cert_file is None) != (key_file is None):
        raise StepFailed("broker", "mqtt.cert_file and mqtt.key_file go together",
                         "give both (the client certificate and its key), or neither")
    if (cert_file or key_file) and not m.ca_file:
        raise StepFailed("broker", "a client certificate needs TLS", "set mqtt.ca_file (the fleet CA's PEM)")
    problems = csr.tls_problems(m.ca_file, cert_file, key_file)
    if problems:
        raise StepFailed("broker", "\n".join(what for what, _ in problems),
                         "; ".join(dict.fromkeys(fix for _, fix in problems)))
    section: dict[str, Any] = {"enabled": True, "host": m.host, "port": m.port or (8883 if m.ca_file else 1883)}
    if m.topic_prefix is not None:
        section["topic_prefix"] = m.topic_prefix
    if m.username is not None:
        section["username"] = m.username
    if m.password is not None:
        section["password"] = m.password.get_secret_value()
    if m.ca_file:
        section["tls"] = {"ca_file": m.ca_file, **({"cert_file": cert_file, "key_file": key_file}
                                                  if cert_file else {})}
    return section


def _check_broker(cfg: config_mod.Config, opt: Options, out: _Out, tested: bool) -> None:
    if not cfg.uplink.enabled:
        return
    if not tested:
        out.skip("broker", "not tested (mqtt.test: false)")
        return
    from appliance.selftest.mqtt import check_uplink

    check, session = check_uplink(cfg, opt.timeout_s)
    if session is not None:
        session.close()
    if check.status == "fail":
        raise StepFailed("broker", check.value, check.hint)
    out.ok("broker", check.value)


def build(a: Answers, opt: Options, out: TextIO, outcome: Outcome | None = None) -> tuple[str, config_mod.Config]:
    """Steps 1-4: test what was answered and make the config text, validated (files included)."""
    o = _Out(out)
    outcome = outcome or Outcome(ok=False)
    data = _previous(opt.config_path, opt.assets_dir, o)
    data["device"] = {**data.get("device", {}), "id": a.device_id}
    data["cameras"] = _cameras(a, opt, o, outcome)
    try:
        detect, notes = platform.choose(a.detector, platform.detect(opt.root),
                                        onnx_ready=platform.onnx_model_ready(opt.assets_dir))
    except ApplianceError as e:
        raise StepFailed("detector", *_split_fix(e)) from None
    data["detect"] = {**data.get("detect", {}), **detect}
    o.ok("detector", "; ".join(notes))
    asked = ("enabled", "host", "port", "username", "password", "tls")  # the rest (topic_prefix...) is kept
    data["uplink"] = {**{k: v for k, v in data.get("uplink", {}).items() if k not in asked}, **_uplink(a, opt, o)}
    web = data.setdefault("web", {})
    if a.dashboard_password is not None:
        from web.auth import hash_password

        web["password_hash"] = hash_password(a.dashboard_password.get_secret_value())
        o.ok("dashboard", "password set (only its salted hash is stored)")
    elif a.dashboard_password_hash is not None:
        web["password_hash"] = a.dashboard_password_hash
        o.ok("dashboard", "password hash set")
    elif web.get("password_hash"):
        o.ok("dashboard", "password kept from the previous config")
    else:
        o.note("dashboard", "no password: the dashboard listens on 127.0.0.1 only (set dashboard_password)")
    power = data.get("power", {})
    data["power"] = {**power, "policy": a.power.policy, **({"mode": a.power.mode} if a.power.mode else {})}
    if not a.power.mode:
        data["power"].pop("mode", None)
    text = "# Written by `appliance provision`; every key is in docs/config.md.\n" + \
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    try:
        cfg = config_mod.from_text(text, str(opt.config_path), assets_dir=opt.assets_dir, warnings=[])
    except ApplianceError as e:
        raise StepFailed("config", f"the new config does not validate:\n{e}",
                         "correct the answers named above (the keys are the config's: docs/config.md)") from None
    o.ok("power", f"policy {a.power.policy}" + (f", mode {a.power.mode}" if a.power.mode else ""))
    _check_broker(cfg, opt, o, tested=a.mqtt is not None and a.mqtt.test)
    return text, cfg


def _service(opt: Options, out: _Out) -> None:
    if not opt.start:
        out.skip("service", "not started (--no-start); start it with: systemctl enable --now appliance")
        return
    if opt.which("systemctl") is None:
        out.skip("service", "systemctl not found (no systemd here): start `appliance run --config "
                            f"{opt.config_path}` yourself")
        return
    for cmd in (["systemctl", "enable", SERVICE], ["systemctl", "restart", SERVICE]):
        r = opt.runner(cmd)
        if r.returncode != 0:
            detail = (r.stderr or r.stdout or "").strip().splitlines()
            e = StepFailed("service", f"`{' '.join(cmd)}` failed (status {r.returncode})"
                           + (f": {detail[-1]}" if detail else ""),
                           "see `systemctl status appliance` and `journalctl -u appliance -n 50` for why; fix "
                           "it, then run provision again")
            e.restarted = cmd[1] == "restart"
            raise e
    out.ok("service", "appliance.service enabled and (re)started with the new config")


def _roll_back(opt: Options, outcome: Outcome, out: _Out, restart: bool) -> str:
    """The service did not take the new config: the previous one goes back in place (the
    backup renamed over it, atomically), the new one is kept as <name>.failed for a look,
    and a service that was restarted is restarted again with the previous config. Returns
    what the installer is told."""
    path = opt.config_path
    failed_copy = path.with_name(path.name + ".failed")
    try:
        fd = os.open(failed_copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the secrets
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(path.read_bytes())
        if outcome.backup is not None:
            os.replace(outcome.backup, path)
        else:
            path.unlink()  # there was no config before: there is none again
    except OSError as e:
        return f"the new config is still in {path}: putting the previous one back failed ({e.strerror or e})"
    outcome.config_written = False
    outcome.rolled_back = True
    told = (f"the previous config is back in {path}" if outcome.backup is not None else
            f"{path} is removed again (there was none before)") + f"; the new one is kept as {failed_copy}"
    if restart and outcome.backup is not None:
        r = opt.runner(["systemctl", "restart", SERVICE])
        told += ("; appliance.service restarted with the previous config" if r.returncode == 0 else
                 "; restarting appliance.service with it failed too (journalctl -u appliance)")
    out.note("service", told)
    return told


def _selftest(cfg: config_mod.Config, opt: Options, out: _Out, stream: TextIO) -> bool | None:
    if not opt.selftest:
        out.skip("self-test", "not run (--no-selftest); run `appliance selftest` before leaving")
        return None
    try:
        from appliance.selftest.run import run_selftest
    except ImportError as e:
        out.skip("self-test", f"not available in this build ({e}); check the device by hand")
        return None
    report = run_selftest(cfg, opt.data_dir, config_path=opt.config_path, timeout_s=opt.timeout_s)
    for name in ("selftest.json", "selftest.lock"):
        _give_to_owner(opt.data_dir / name, opt.data_dir)
    print(report.summary(), file=stream)
    if report.ok:
        out.ok("self-test", "nothing failed")
    else:
        out.fail("self-test", "some checks failed (above)", "fix what each says, then run `appliance selftest`")
    return report.ok


def provision(a: Answers, opt: Options, out: TextIO) -> Outcome:
    """Run every step; prints as it goes. The config is written only after steps 1-4 passed."""
    o = _Out(out)
    outcome = Outcome(ok=False)
    print(f"provision: device {a.device_id}, config {opt.config_path}", file=out)
    try:
        text, cfg = build(a, opt, out, outcome)
        try:
            outcome.backup = replace_config(opt.config_path, text)
        except ApplianceError as e:
            what, _, fix = str(e).partition(" Fix: ")
            raise StepFailed("write", what, fix) from None
        outcome.config_written = True
        o.ok("write", f"{opt.config_path} written" + (f" (previous kept as {outcome.backup})"
                                                      if outcome.backup else ""))
        _service(opt, o)
    except StepFailed as e:
        o.fail(e.step, e.what, e.fix)
        outcome.failed_step = e.step
        if outcome.config_written:  # only the service step fails after the write
            kept = _roll_back(opt, outcome, o, restart=e.restarted)
        else:
            kept = f"{opt.config_path} is unchanged"
        print(f"provision: failed at {e.step}; {kept}", file=out)
        return outcome
    outcome.selftest_ok = _selftest(cfg, opt, o, out)
    outcome.ok = outcome.selftest_ok is not False
    print("provision: done" if outcome.ok else "provision: done, but the self-test found problems", file=out)
    return outcome
