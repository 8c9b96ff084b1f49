"""What `govedge gateway install` and `govedge hub install` share: files written atomically with their
final owner and mode, a CA of the host's own and its broker's certificate, Mosquitto's password file,
the Debian packages an install needs, and the system commands it runs.

Each install writes only what differs from what is there: running it again changes nothing, and a
secret is never readable by others, not even for the moment between creating and chmod-ing a file.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import GovedgeError

# Mosquitto's password file, PBKDF2-SHA512 (mosquitto 2.0 src/password_mosq.c pw__hash and
# apps/mosquitto_passwd/mosquitto_passwd.c output_new_password): "user:$7$iterations$salt$hash",
# a 12-byte salt and a 64-byte hash, both in standard base64; mosquitto_passwd's default is 101
# iterations. The passwords are 24 random bytes: the iterations guard nothing a guess could find.
PBKDF2_ITERATIONS = 1000
SALT_BYTES, HASH_BYTES = 12, 64

# what an install into / needs of Debian (package: the file that shows it is there)
DEBIAN_NEEDS = {"mosquitto": "/usr/sbin/mosquitto", "python3-venv": "ensurepip", "systemd": "/usr/bin/systemctl"}


class InstallError(GovedgeError, RuntimeError):
    code = "install"


def missing_debian_packages(needs: tuple[str, ...] = ("mosquitto", "python3-venv", "systemd")) -> list[str]:
    """The Debian packages of ``needs`` this host lacks (an install into / checks before it writes a file)."""
    import importlib.util

    missing = []
    for package in needs:
        probe = DEBIAN_NEEDS[package]
        present = importlib.util.find_spec(probe) is not None if "/" not in probe else Path(probe).exists()
        if not present:
            missing.append(package)
    return missing


def require_debian_packages(needs: tuple[str, ...] = ("mosquitto", "python3-venv", "systemd")) -> None:
    """One line naming every Debian package of ``needs`` that is missing, and the command that installs them."""
    missing = missing_debian_packages(needs)
    if missing:
        raise InstallError(f"the Debian package{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                           f"{'are' if len(missing) > 1 else 'is'} missing: sudo apt-get install {' '.join(missing)}, "
                           "then run this again")


def temp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write(path: Path, data: bytes | str, mode: int = 0o644, changed: list | None = None,
          owner: tuple[int, int] | None = None) -> None:
    """Writes only if the content differs (a second install changes nothing), atomically. The file has
    its final owner and mode before a byte of it is written (a new temporary file, O_EXCL, renamed over
    the old one): no moment in which a secret is readable by others; a failed write leaves no temp file."""
    data = data.encode() if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == data:
        settle(path, mode, owner)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_of(path)
    tmp.unlink(missing_ok=True)  # a write cut short before
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # the umask does not decide, and a group gets read only after fchown
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    if changed is not None:
        changed.append(path)


def settle(path: Path, mode: int, owner: tuple[int, int] | None) -> None:
    """An unchanged file with an older install's owner or mode gets this one's, never wider on the way."""
    st = path.stat()
    if owner is not None and (st.st_uid, st.st_gid) != owner:
        path.chmod(st.st_mode & mode & 0o700)
        os.chown(path, *owner)
        path.chmod(mode)
    elif st.st_mode & 0o7777 != mode:
        path.chmod(mode)


def pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def broker_tls(tls: Path, ca_name: str, names: list[str], changed: list,
               ca_key_owner: tuple[int, int] | None = None, key_owner: tuple[int, int] | None = None) -> None:
    """A CA of this host's own (tls/ca.pem, its key tls/ca.key) and its broker's certificate
    (tls/broker.pem, tls/broker.key) for the names its clients connect to; both kept while they fit."""
    ca_pem, ca_key_pem = tls / "ca.pem", tls / "ca.key"
    now = datetime.datetime.now(datetime.timezone.utc)
    if not ca_pem.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        write(ca_key_pem, pem_key(ca_key), 0o600, changed, ca_key_owner)
        write(ca_pem, ca.public_bytes(serialization.Encoding.PEM), 0o644, changed)
    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    write(tls / "ca.der", ca.public_bytes(serialization.Encoding.DER), 0o644, changed)
    broker_pem = tls / "broker.pem"
    wanted = sorted(set(names))
    if broker_pem.exists():
        cert = x509.load_pem_x509_certificate(broker_pem.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = sorted([str(n) for n in san.get_values_for_type(x509.DNSName)]
                      + [str(a) for a in san.get_values_for_type(x509.IPAddress)])
        if have == wanted and cert.not_valid_after_utc > now + datetime.timedelta(days=30):
            settle(tls / "broker.key", 0o640, key_owner)
            return
    ca_key = serialization.load_pem_private_key(ca_key_pem.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    alt = []
    for n in wanted:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, wanted[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write(tls / "broker.key", pem_key(key), 0o640, changed, key_owner)
    write(broker_pem, cert.public_bytes(serialization.Encoding.PEM), 0o644, changed)


def password_line(user: str, password: str, salt: bytes | None = None,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """One line of Mosquitto's password file (PBKDF2_ITERATIONS above names the format's source)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_matches(line: str, password: str) -> bool:
    try:
        _, kind, iterations, salt, digest = line.split(":", 1)[1].split("$")
        if kind != "7":
            return False
        want = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations), HASH_BYTES)
        return hmac.compare_digest(want, base64.b64decode(digest))
    except ValueError:
        return False


def password_file(path: Path, creds: dict[str, str], changed: list, owner: tuple[int, int] | None) -> None:
    """Mosquitto's password file for ``creds`` (user: password); a line whose password is unchanged is
    kept as it is (a second install changes nothing). Written here, never by mosquitto_passwd: a password
    on a command line is readable by every user."""
    old = {}
    if path.exists():
        old = {line.split(":", 1)[0]: line for line in path.read_text().splitlines() if ":" in line}
    lines = [old[u] if u in old and password_matches(old[u], pw) else password_line(u, pw)
             for u, pw in sorted(creds.items())]
    write(path, "\n".join(lines) + "\n", 0o640, changed, owner)


def run(args: list[str]) -> str:
    """A system command of the install (never with a secret among its arguments); one line if it fails."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise InstallError(f"{args[0]} not found: this needs a Debian system with systemd") from None
    if proc.returncode:
        raise InstallError(f"{' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
    return " ".join(args)


def systemd_running() -> bool:
    """Whether systemd manages this system (sd_booted(3): the folder /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def accounts(root: Path, service_user: str, role: str) -> tuple[tuple[int, int] | None, int | None]:
    """(uid, gid) of the service user and the gid of Mosquitto's group, for the files' owners. Installed into
    / the service user is made if missing (useradd --system: a fixed account owns the key and the data
    across reinstalls, and a technician can see it; DynamicUser would need the key handed in through
    systemd's credentials); under another root nothing is made: an existing user is used when the
    install runs as root, else the files stay the invoking user's. ``role``: "gateway" or "hub"."""
    if root != Path("/"):
        try:
            account = pwd.getpwnam(service_user)
        except KeyError:
            return None, None
        return ((account.pw_uid, account.pw_gid) if os.geteuid() == 0 else None), None
    if os.geteuid() != 0:
        raise InstallError(f"installing into / needs root: run sudo govedge {role} install (or give --root DIR)")
    import grp

    try:
        mosquitto = grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        raise InstallError("the mosquitto group does not exist: install Debian's mosquitto package first") from None
    try:
        account = pwd.getpwnam(service_user)
    except KeyError:
        run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/govedge", "--no-create-home",
             "--shell", "/usr/sbin/nologin", "--comment", f"govchain-edge {role}", service_user])
        account = pwd.getpwnam(service_user)
    return (account.pw_uid, account.pw_gid), mosquitto
