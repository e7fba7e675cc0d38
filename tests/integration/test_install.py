"""provisioning/install into a staging root (--root): no apt-get, useradd or systemctl there,
but the real venv, pip install of this tree, config, data, units and `appliance fetch`.

The first install creates a venv and installs the appliance with its dependencies (pip's
cache makes it quick after the first time); every later test reuses that root, in order."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "provisioning" / "install"
UNITS = ROOT / "systemd"


def run_install(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    proc = subprocess.run([str(INSTALL), "--root", str(root), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file outside the venv, and the installed package's files: mtime and hash."""
    site = next((root / "opt/appliance/venv/lib").glob("python3*/site-packages"))
    files = [p for p in root.rglob("*") if p.is_file() and "venv" not in p.relative_to(root).parts]
    files += [p for p in (site / "appliance").rglob("*.py")] + [root / "opt/appliance/venv/bin/appliance"]
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in files}


def expected_files() -> list[str]:
    """Where provisioning/install puts what systemd/ holds today (another change may add more)."""
    out = []
    for p in sorted(UNITS.iterdir()):
        if p.suffix in (".service", ".timer", ".socket", ".path", ".target"):
            out.append(f"etc/systemd/system/{p.name}")
        elif p.is_file() and "." not in p.name and os.access(p, os.X_OK):
            out.append(f"usr/local/lib/appliance/{p.name}")
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("devroot")
    run_install(root, "--no-start", "--skip-packages")
    return root


def test_install_lays_down_program_config_data_and_units(root: Path):
    appliance = root / "opt/appliance/venv/bin/appliance"
    assert appliance.is_file() and os.access(appliance, os.X_OK)
    config = root / "etc/appliance/config.yaml"
    assert "device:" in config.read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    # Group appliance may replace config.yaml (the dashboard's editors; ReadWritePaths= in the unit).
    assert oct(config.parent.stat().st_mode & 0o777) == "0o770"
    assert (root / "var/lib/appliance").is_dir()
    assert (root / "var/lib/appliance/assets/mobilenet_ssd_v2_coco_quant_postprocess.tflite").is_file()
    for rel in expected_files():
        assert (root / rel).is_file(), rel
        assert (root / rel).read_bytes() == (UNITS / Path(rel).name).read_bytes()
    manifest = (root / "opt/appliance/installed-files").read_text().split()
    assert set(manifest) >= {"/" + rel for rel in expected_files()}
    # Not a source checkout: the installed package finds its model manifests in the venv.
    proc = subprocess.run([str(root / "opt/appliance/venv/bin/python"), "-I", "-c",
                           "from appliance import paths;"
                           "print(paths.checkout_dir(), (paths.MODELS_DIR / 'ssd-mobilenet-v2/model.yaml').is_file())"],
                          capture_output=True, text=True, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "True"]


def test_installed_appliance_checks_the_installed_config(root: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_ASSETS_DIR"] = str(root / "var/lib/appliance/assets")
    proc = subprocess.run([str(root / "opt/appliance/venv/bin/appliance"), "config", "check",
                           str(root / "etc/appliance/config.yaml")],
                          capture_output=True, text=True, cwd="/", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ": valid;" in proc.stdout.splitlines()[0]


def test_selftest_from_the_installation(root: Path, tmp_path: Path):
    """The installed program's self-test: the installed config with the demo camera and the uplink
    pointed at a real mosquitto, the installed model, the installed data directory."""
    import json

    import yaml

    from tests.mqtt_broker import Mosquitto, Subscriber
    from tests.uplink_util import schema

    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, ["inst/#"]).start()
    try:
        installed = yaml.safe_load((root / "etc/appliance/config.yaml").read_text())
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({**installed, "cameras": [{"id": "demo", "source": "asset:vtest.avi"}],
                                          "uplink": {"enabled": True, "host": "127.0.0.1", "port": broker.port,
                                                     "topic_prefix": "inst"}}))
        bin_ = tmp_path / "bin"  # no NTP here: a timedatectl that says the clock is synchronised
        bin_.mkdir()
        (bin_ / "timedatectl").write_text("#!/bin/sh\necho yes\n")
        (bin_ / "timedatectl").chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(APPLIANCE_ASSETS_DIR=str(root / "var/lib/appliance/assets"), PATH=f"{bin_}:{env['PATH']}")
        proc = subprocess.run([str(root / "opt/appliance/venv/bin/appliance"), "selftest", "--config", str(config),
                               "--data-dir", str(root / "var/lib/appliance"), "--json"],
                              capture_output=True, text=True, cwd="/", env=env, timeout=300)
        body = json.loads(proc.stdout)
        status = {c["name"]: c["status"] for c in body["checks"]}
        assert proc.returncode == 0 and body["ok"], (status, proc.stderr[-2000:])
        assert status["camera:demo"] == status["uplink"] == status["config"] == status["classifier"] == "pass", status
        assert status["detector"] in ("pass", "warn")  # warn: slower than this platform should be (a busy box)
        topic = f"inst/{installed['device']['id']}/selftest"
        sub.wait_for(lambda: sub.exact(topic), 10, "the published report")
        schema("mqtt-selftest").validate(json.loads(sub.exact(topic)[0].payload))
        kept = json.loads((root / "var/lib/appliance/selftest.json").read_text())
        assert kept["published"] == topic and kept["checks"] == body["checks"]
    finally:
        sub.close()
        broker.close()


def test_second_install_changes_nothing(root: Path):
    (root / "etc/appliance/config.yaml").write_text("device: {id: gate-3}\n")  # the installer's own edit
    for _attempt in range(2):  # once more if the source tree changed meanwhile (edits in progress)
        before = snapshot(root)
        proc = run_install(root, "--no-start", "--skip-packages")
        if "/opt/appliance/venv is up to date" in proc.stderr:
            break
    assert "/opt/appliance/venv is up to date" in proc.stderr
    assert "installed /" not in proc.stderr
    assert snapshot(root) == before


def test_units_follow_the_units_directory(root: Path, tmp_path: Path):
    units = tmp_path / "units"
    (units / "sudoers.d").mkdir(parents=True)
    (units / "appliance.service").write_text("[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    (units / "appliance-sync.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    (units / "sudoers.d" / "appliance").write_text("appliance ALL=(root) NOPASSWD: /usr/bin/true\n")
    proc = run_install(root, "--no-start", "--skip-packages", "--skip-fetch", "--units", str(units))
    assert (root / "etc/systemd/system/appliance-sync.timer").is_file()
    assert oct((root / "etc/sudoers.d/appliance").stat().st_mode & 0o777) == "0o440"
    # What the earlier install put there and this directory lacks is gone.
    for rel in expected_files():
        if Path(rel).name not in ("appliance.service",):
            assert not (root / rel).exists(), rel
    assert "--no-start: not enabling or starting appliance.service" in proc.stderr
    run_install(root, "--no-start", "--skip-packages", "--skip-fetch")  # back to systemd/
    for rel in expected_files():
        assert (root / rel).is_file(), rel
    assert not (root / "etc/sudoers.d/appliance").exists()


def test_uninstall_keeps_config_and_data(root: Path):
    import sqlite3

    db = root / "var/lib/appliance/appliance.db"  # the device's events: what --uninstall must keep
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (what TEXT)")
        conn.execute("INSERT INTO kept VALUES ('an event from before the uninstall')")
    conn.close()
    run_install(root, "--uninstall")
    assert not (root / "opt/appliance").exists()
    for rel in expected_files():
        assert not (root / rel).exists(), rel
    assert (root / "etc/appliance/config.yaml").read_text() == "device: {id: gate-3}\n"
    assert (root / "var/lib/appliance/assets").is_dir()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT what FROM kept").fetchall() == [("an event from before the uninstall",)]
    finally:
        conn.close()


def test_purge_removes_config_and_data(root: Path):
    proc = run_install(root, "--purge")
    assert not (root / "etc/appliance").exists()
    assert not (root / "var/lib/appliance").exists()
    assert "skipped: userdel appliance" in proc.stderr


def test_unknown_option_is_refused(tmp_path: Path):
    proc = subprocess.run([str(INSTALL), "--root", str(tmp_path), "--frobnicate"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown option --frobnicate" in proc.stderr
    assert not (tmp_path / "opt").exists()


def test_jetson_venv_uses_jetpack_opencv(tmp_path: Path):
    """/etc/nv_tegra_release marks a Jetson: the venv sees the system site-packages (JetPack's
    cv2 and tensorrt), gets no pip OpenCV, numpy below 2, cuda-python, and the config the power helpers."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, BOARD: generic, EABI: aarch64\n")
    run_install(tmp_path, "--no-start", "--skip-packages", "--skip-fetch")
    venv = tmp_path / "opt/appliance/venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    proc = subprocess.run([str(venv / "bin/python"), "-m", "pip", "list", "--local", "--format=freeze"],
                          capture_output=True, text=True, timeout=120)
    installed = {line.split("==")[0].lower(): line.split("==")[1] for line in proc.stdout.split()}
    assert "opencv-python-headless" not in installed
    assert int(installed["numpy"].split(".")[0]) < 2
    assert "appliance" in installed
    assert "cuda-python" in installed  # TensorRT's buffers and streams (docs/tensorrt.md)
    assert "nvpmodel_cmd: /usr/local/lib/appliance/appliance-nvpmodel" in (
        tmp_path / "etc/appliance/config.yaml").read_text()
