"""TLS for the API port: ``https://`` and ``wss://`` (the API, the demo page, the HTTP
transport) on the one listener, from the operator's certificate or one made at start.

Why: a browser shares a camera only with a secure page (``https://``, or ``localhost``), so a
phone on the LAN cannot use the demo page over plain HTTP. Two sources:

- ``tls_cert`` / ``tls_key``: PEM files (a chain and its key), read at start; unreadable
  files or a key that does not match refuse the start with one clear line (:class:`TlsError`);
- ``tls_self_signed``: a certificate for ``tls_host_names`` (default: this host's name, its LAN
  addresses, ``localhost`` and the loopback addresses) is made with ``cryptography`` and kept
  in ``tls_dir`` (default ``$XDG_STATE_HOME/videocall/tls``, never the recordings folder), so a
  phone that accepted it once is not asked again after a restart; it is made anew when a name
  is missing from it or it expires within 30 days. Its SHA-256 fingerprint is logged, to compare
  with the one the phone's browser shows.

:meth:`TlsSource.reload` (SIGHUP) reads the files again into the *same* ``SSLContext``: new
handshakes get the new certificate, connections already open (calls) are not touched. A reload
that fails (a half-written file) keeps the old certificate and says why.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings

__all__ = ["TlsError", "TlsSource", "default_host_names", "fingerprint", "make_self_signed", "server_context"]

log = logging.getLogger("videocall.tls")

SELF_SIGNED_CERT = "self-signed-cert.pem"
SELF_SIGNED_KEY = "self-signed-key.pem"
#: A self-signed certificate is valid this long, and made anew this close to its end.
VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


class TlsError(ValueError):
    """The TLS settings cannot be served: the message says which file and why."""


def default_tls_dir() -> Path:
    """Where a made certificate is kept: the state folder of this user (XDG), not the
    working directory nor the recordings folder."""
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    return (Path(state) if state else Path.home() / ".local" / "state") / "videocall" / "tls"


def default_host_names() -> list[str]:
    """This host's name, ``localhost``, the loopback addresses and every address of its
    network interfaces (what a phone on the LAN types)."""
    names = [socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    try:
        import ifaddr  # a dependency of aioice; lists interfaces without sending anything

        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
                if not ipaddress.ip_address(address.split("%")[0]).is_link_local:
                    names.append(address.split("%")[0])
    except (ImportError, OSError, ValueError):  # pragma: no cover - names above are still there
        pass
    return list(dict.fromkeys(name for name in names if name))


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the (first) certificate's DER, as browsers show it: ``AB:CD:...``."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 at least) holding ``cert`` and ``key``, or :class:`TlsError`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, cert, key)
    return context


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    for what, path in (("tls_cert", cert), ("tls_key", key)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise TlsError(f"{what} {path}: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsError(f"tls_key {key} does not match the certificate in tls_cert {cert}") from None
        raise TlsError(f"tls_cert {cert} / tls_key {key}: not a PEM certificate chain and its key ({reason})") from None


def _covers(cert_pem: bytes, names: Iterable[str], now: datetime.datetime) -> bool:
    """Whether a stored certificate names every host in ``names`` and is not near its end."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(n).lower() for n in san.get_values_for_type(x509.DNSName)}
    have |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    wanted = {_san_text(name) for name in names}
    return wanted <= have and cert.not_valid_after_utc - now > RENEW_BEFORE


def _san_text(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def make_self_signed(names: list[str], folder: Path, now: datetime.datetime | None = None) -> tuple[Path, Path, bool]:
    """The certificate and key in ``folder`` for ``names``: the stored ones when they still
    fit, else new ones (an ECDSA P-256 key, readable by this user only). Returns both paths
    and whether they were made now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or datetime.datetime.now(datetime.UTC)
    cert_path, key_path = folder / SELF_SIGNED_CERT, folder / SELF_SIGNED_KEY
    try:
        if key_path.is_file() and _covers(cert_path.read_bytes(), names, now):
            return cert_path, key_path, False
    except OSError:
        pass
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise TlsError(f"tls_dir {folder}: {exc.strerror or exc}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64] if names else "videocall"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "videocall self-signed")])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # As ``openssl req -x509`` makes one: its own CA (a client trusts it as its CA file),
        # with the identifiers and key usage strict verifiers (Python 3.13's default) want.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        # The key first, created private; the certificate replaces the old one last.
        fd = os.open(key_path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
        os.replace(key_path.with_suffix(".tmp"), key_path)
        cert_path.with_suffix(".tmp").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.replace(cert_path.with_suffix(".tmp"), cert_path)
    except OSError as exc:
        raise TlsError(f"tls_dir {folder}: {exc.strerror or exc}") from None
    return cert_path, key_path, True


@dataclass
class TlsSource:
    """Where the certificate comes from, and the live context the listener serves with."""

    cert: Path
    key: Path
    context: ssl.SSLContext
    self_signed: bool = False
    names: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsSource | None:
        """None when TLS is off; :class:`TlsError` when it cannot be served."""
        if settings.tls_self_signed:
            names = list(settings.tls_host_names) or default_host_names()
            folder = Path(settings.tls_dir).expanduser() if settings.tls_dir else default_tls_dir()
            cert, key, made = make_self_signed(names, folder)
            source = cls(cert, key, server_context(cert, key), self_signed=True, names=tuple(names))
            log.info("TLS: %s self-signed certificate for %s, SHA-256 fingerprint %s, stored in %s",
                     "made a" if made else "using the", ", ".join(names), source.fingerprint, folder)
            return source
        if settings.tls_cert:
            cert, key = Path(settings.tls_cert).expanduser(), Path(settings.tls_key).expanduser()
            source = cls(cert, key, server_context(cert, key))
            log.info("TLS: certificate %s (SHA-256 fingerprint %s)", cert, source.fingerprint)
            return source
        return None

    @property
    def fingerprint(self) -> str:
        try:
            return fingerprint(self.cert.read_bytes())
        except (OSError, ValueError):
            return "(unreadable)"

    def reload(self) -> bool:
        """Read the files again (SIGHUP); a self-signed one is made anew if it no longer fits.
        The live context changes only if the new pair loads; False (logged) otherwise."""
        try:
            if self.self_signed:
                make_self_signed(list(self.names), self.cert.parent)
            server_context(self.cert, self.key)  # check on a scratch context first
            _load(self.context, self.cert, self.key)
        except TlsError as exc:
            log.error("TLS reload failed, still serving the previous certificate: %s", exc)
            return False
        log.info("TLS: certificate reloaded from %s (SHA-256 fingerprint %s); new connections get it",
                 self.cert, self.fingerprint)
        return True
