"""`govedge gateway install` with least privilege: every file it writes has its final owner and mode
from the moment it exists, a write cut short leaves no temporary file, the password file is the
install's own (Mosquitto's PBKDF2 format, no password on any command line), and the gateway runs as
an unprivileged user owning only what the install gave it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from govedge.gateway import install
from govedge.tools.dev.broker import free_port
from govedge.tools.field.provision import provision
from test_install import _install, run_installed

NOBODY = pwd.getpwnam("nobody")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners other than the invoking user need root "
                                                      "(chown, and setpriv to run the gateway as another user)")

# path under the root: (mode, owner) with "service" the service user, "root" root (Mosquitto's group
# on the Pi is asserted nowhere here: under --root no group of it is looked up)
EXPECTED = {
    "etc/govedge/gateway.key": (0o600, "service", "service"),
    "etc/govedge/gateway.toml": (0o640, "root", "service"),
    "etc/govedge/credentials.json": (0o600, "root", "root"),
    "etc/govedge/tls/ca.key": (0o600, "root", "root"),
    "etc/govedge/tls/broker.key": (0o640, None, None),
    "etc/govedge/mosquitto/passwd": (0o640, None, None),
    "etc/govedge/gateway.pub.pem": (0o644, None, None),
    "etc/govedge/registry.json": (0o644, None, None),
    "etc/govedge/tls/ca.pem": (0o644, None, None),
    "etc/govedge/tls/ca.der": (0o644, None, None),
    "etc/govedge/tls/broker.pem": (0o644, None, None),
    "etc/govedge/mosquitto/acl": (0o644, None, None),
    "etc/mosquitto/conf.d/govedge.conf": (0o644, None, None),
    "etc/systemd/system/govedge-gateway.service": (0o644, None, None),
    "etc/systemd/system/govedge-gateway-web.service": (0o644, None, None),
}


def _devices(tmp: Path) -> tuple[Path, Path]:
    registry, devices = tmp / "registry.json", tmp / "devices"
    for device in ("esp32-0301", "esp32-0302"):
        provision(device, "esp32", ["bme280"], registry, devices)
    return registry, devices


@as_root
def test_every_file_the_install_writes_has_its_final_owner_and_mode(tmp_path):
    registry, devices = _devices(tmp_path)
    root = tmp_path / "root"
    done = _install(root, registry, devices, free_port(), "--no-self-test", "--service-user", "nobody")
    assert done.returncode == 0, done.stderr
    assert "services  not started: --root writes files only (no user, no systemctl)" in done.stdout
    ids = {"service": (NOBODY.pw_uid, NOBODY.pw_gid), "root": (0, 0)}
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert files == set(EXPECTED), files ^ set(EXPECTED)  # nothing else, no temporary file
    for name, (mode, user, group) in EXPECTED.items():
        st = (root / name).stat()
        assert stat.S_IMODE(st.st_mode) == mode, (name, oct(st.st_mode))
        if user:
            assert (st.st_uid, st.st_gid) == (ids[user][0], ids[group][1]), name
    data = (root / "var/lib/govedge").stat()
    assert (data.st_uid, stat.S_IMODE(data.st_mode)) == (NOBODY.pw_uid, 0o750)
    unit = (root / "etc/systemd/system/govedge-gateway.service").read_text()
    assert "User=nobody\nGroup=nogroup\n" in unit


def test_a_write_cut_short_leaves_no_temporary_file_and_a_secret_is_never_readable_by_others(tmp_path, monkeypatch):
    registry, devices = _devices(tmp_path)
    root = tmp_path / "root"
    options = install.Options(root=root, gateway_id="gw-priv-01", hub_host="127.0.0.1", registry=registry,
                              broker_names=["127.0.0.1"])
    seen: dict[str, int] = {}
    real_fsync = os.fsync

    def fsync(fd):  # the moment the secret's bytes are in the temporary file: who could read it
        seen[os.readlink(f"/proc/self/fd/{fd}")] = stat.S_IMODE(os.fstat(fd).st_mode)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    real_replace = os.replace

    def power_cut(src, dst):
        if Path(dst).name == "credentials.json":
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        install.install(options)
    assert list(root.rglob("*.tmp")) == []
    assert seen[str(root / "etc/govedge/.gateway.key.tmp")] == 0o600
    assert seen[str(root / "etc/govedge/tls/.ca.key.tmp")] == 0o600
    assert seen[str(root / "etc/govedge/.credentials.json.tmp")] == 0o600
    monkeypatch.setattr(os, "replace", real_replace)
    # a temporary file a power cut left (readable, half written): the next install removes it
    for stale in ("etc/govedge/.gateway.key.tmp", "etc/govedge/.credentials.json.tmp",
                  "etc/mosquitto/conf.d/.govedge.conf.tmp"):
        (root / stale).parent.mkdir(parents=True, exist_ok=True)
        (root / stale).write_text("half")
    install.install(options)
    assert list(root.rglob("*.tmp")) == []
    assert seen[str(root / "etc/govedge/mosquitto/.passwd.tmp")] == 0o640
    for name, (mode, _, _) in EXPECTED.items():
        assert stat.S_IMODE((root / name).stat().st_mode) == mode, name


def test_the_password_file_is_mosquittos_own_format():
    # what mosquitto_passwd writes, checked by ours; what ours writes has its shape (a real Mosquitto
    # accepts it: every login of tests/gateway/test_install.py goes through it)
    tool = shutil.which("mosquitto_passwd")
    if tool:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "passwd"
            subprocess.run([tool, "-c", "-b", str(path), "esp32-0001", "a-test-password"], check=True)
            line = path.read_text().strip()
        assert install._password_matches(line, "a-test-password")
        assert not install._password_matches(line, "another-password")
    line = install.password_line("esp32-0001", "a-test-password", salt=bytes(12), iterations=101)
    user, _, kind, iterations, salt, digest = line.replace(":", "$", 1).split("$")
    assert (user, kind, iterations, salt) == ("esp32-0001", "7", "101", "AAAAAAAAAAAAAAAA")
    assert len(digest) == 88 and install._password_matches(line, "a-test-password")


def test_no_password_reaches_a_command_line(tmp_path, monkeypatch):
    registry, devices = _devices(tmp_path)
    commands: list[list[str]] = []
    real_popen = subprocess.Popen.__init__

    def popen(self, args, *a, **kw):
        commands.append([str(arg) for arg in args])
        real_popen(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    install.install(install.Options(root=tmp_path / "root", gateway_id="gw-priv-02", hub_host="127.0.0.1",
                                    registry=registry, broker_names=["127.0.0.1"]))
    passwords = json.loads((tmp_path / "root/etc/govedge/credentials.json").read_text()).values()
    assert len(passwords) == 3
    assert not [c for c in commands if any(pw in arg for pw in passwords for arg in c)], commands


def _python_of_another_user() -> list[str]:
    """The system's interpreter of this version, with this environment's packages as its user site (the
    test environment's own interpreter may live in root's home, which the user cannot enter)."""
    found = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin")
    if not found:
        pytest.skip(f"no system python{sys.version_info.major}.{sys.version_info.minor} another user can run")
    return [found]


@as_root
def test_the_gateway_runs_as_an_unprivileged_user_with_only_what_the_install_gave_it(tmp_path, build_dir):
    from support.nodes import VirtualNode

    if not shutil.which("setpriv"):
        pytest.fail("setpriv is missing (Debian package util-linux)")
    top = Path(tempfile.mkdtemp(prefix="govedge-priv-"))  # the user must reach the root; pytest's folder is 0700
    top.chmod(0o755)
    registry, port = tmp_path / "registry.json", free_port()
    node = VirtualNode(tmp_path / "esp32-0311", build_dir, registry, "esp32-0311", port)
    root = top / "root"
    done = _install(root, registry, tmp_path / "esp32-0311-provisioning", port, "--no-self-test",
                    "--service-user", "nobody")
    assert done.returncode == 0, done.stderr
    as_nobody = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups"]
    try:
        for secret in ("etc/govedge/credentials.json", "etc/govedge/tls/ca.key"):
            assert subprocess.run([*as_nobody, "cat", str(root / secret)], capture_output=True).returncode != 0
        db = run_installed(root, tmp_path, port, node, "esp32-0311", 1, (*as_nobody, *_python_of_another_user()),
                           {**os.environ, "HOME": str(root / "var/lib/govedge"), "PYTHONUSERBASE": sys.prefix})
        assert db.stat().st_uid == NOBODY.pw_uid  # the store is the service user's
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_on_the_pi_the_units_are_enabled_started_and_restarted_or_reloaded_as_their_files_changed():
    # what systemd is asked (tests/tools/test_deb.py runs it against a real systemd)
    lay = install.Layout(Path("/"))
    enable = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "mosquitto.service"]]
    gateway = ["systemctl", "enable", "--now", "govedge-gateway.service"]
    page = ["systemctl", "enable", "--now", "govedge-gateway-web.service"]
    commands = lambda *changed: install.service_commands({"layout": lay, "changed_paths": list(changed)})  # noqa: E731
    assert commands() == [*enable, gateway, page]
    assert commands(lay.passwd, lay.registry) == [*enable, ["systemctl", "reload", "mosquitto.service"], gateway,
                                                  page]
    assert commands(lay.broker_conf, lay.passwd) == [*enable, ["systemctl", "restart", "mosquitto.service"], gateway,
                                                     page]
    assert commands(lay.toml) == [*enable, gateway, ["systemctl", "restart", "govedge-gateway.service"], page,
                                  ["systemctl", "restart", "govedge-gateway-web.service"]]
    assert commands(lay.web_unit) == [*enable, gateway, page, ["systemctl", "restart", "govedge-gateway-web.service"]]
    with pytest.raises(install.InstallError, match="only for an install into /"):
        install.start_services({"layout": install.Layout(Path("/tmp/x")), "changed_paths": []})
