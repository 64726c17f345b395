"""The receiver's TLS identity: a self-signed certificate made once, kept, and known by its SHA-256.

``adasr receive`` serves its offer endpoint over HTTPS so that the bearer token and the session
description (whose DTLS fingerprint authenticates the media) never cross the network in the clear.
No CA vouches for a home machine, so the caller pins the certificate instead: the receiver prints
the certificate's SHA-256 fingerprint with its URL and token, and the sender refuses any other
certificate (``aiohttp.Fingerprint``). The certificate is made on first use and kept in the
user's configuration folder, so the fingerprint a caller once noted stays valid across restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from realtime.errors import CallError

CERTIFICATE_FILE = "receiver-cert.pem"
KEY_FILE = "receiver-key.pem"
#: A pinned certificate is trusted for its key, not its dates; ten years keeps a noted pin valid.
VALIDITY = datetime.timedelta(days=3650)
#: Mode bits that let other users plant files (the folder, the certificate).
WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
#: Mode bits that let other users read or replace the private key.
KEY_OPEN_TO_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def default_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/adasr``, else ``~/.config/adasr``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "adasr"


def fingerprint_hex(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes, 64 lowercase hex digits (what ``--pin`` takes)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class TlsIdentity:
    """A certificate and its key on disk, and the certificate's fingerprint."""

    certificate: Path
    """PEM certificate."""
    key: Path
    """PEM private key (mode 0600)."""
    fingerprint: str
    """SHA-256 of the certificate, 64 lowercase hex digits."""

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context serving this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.certificate), str(self.key))
        return context


def load_or_create_identity(folder: Path | None = None, name: str = "adasr receiver") -> TlsIdentity:
    """The identity kept in ``folder`` (default ``default_config_dir()``), made there on first use."""
    folder = Path(folder) if folder is not None else default_config_dir()
    cert_path, key_path = folder / CERTIFICATE_FILE, folder / KEY_FILE
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _refuse_if_open(folder, WRITABLE_BY_OTHERS, "700")
    if cert_path.exists() or key_path.exists():
        _refuse_if_open(key_path, KEY_OPEN_TO_OTHERS, "600")
        _refuse_if_open(cert_path, WRITABLE_BY_OTHERS, "644")
        return _load(cert_path, key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed(key, name)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_new(key_path, key_pem, 0o600)
    _write_new(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return TlsIdentity(cert_path, key_path, fingerprint_hex(certificate))


def _refuse_if_open(path: Path, forbidden: int, fix_mode: str) -> None:
    """CallError when ``path`` (links followed) belongs to another user or has a ``forbidden`` mode bit: whoever can
    write the folder or the key can plant a key pair that we would serve (and print the fingerprint of) as ours."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid():
        raise CallError(f"refusing the receiver's TLS identity: {path} belongs to another user (uid {info.st_uid}), "
                        f"who could plant a key; use a --config-dir of your own")
    if mode & forbidden:
        others = "readable or writable by others" if forbidden & stat.S_IROTH else "writable by others"
        raise CallError(f"refusing the receiver's TLS identity: {path} is {others} (mode {mode:o}), so another user "
                        f"could plant a key; fix it with `chmod {fix_mode} {path}` (and delete {CERTIFICATE_FILE} and "
                        f"{KEY_FILE} if you did not make them)")


def load_identity(certificate: Path, key: Path) -> TlsIdentity:
    """A certificate and key the user brings (``adasr receive --cert --key``): one a CA signed, which browsers
    trust without a warning, as they cannot check a pinned fingerprint."""
    for path in (certificate, key):
        if not Path(path).is_file():
            raise CallError(f"--cert/--key: {path} is not a file")
    return _load(Path(certificate), Path(key))


def _self_signed(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.IPAddress(ipaddress.ip_address("::1"))])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY).add_extension(names, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (a key is never readable by others, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _load(cert_path: Path, key_path: Path) -> TlsIdentity:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CallError(f"cannot read the receiver's certificate in {cert_path.parent} ({exc}): delete "
                        f"{cert_path.name} and {key_path.name} there to make a new one (callers then need the "
                        "new fingerprint)") from None
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CallError(f"{key_path} is not the key of {cert_path}: delete both to make a new pair")
    return TlsIdentity(cert_path, key_path, fingerprint_hex(certificate))
