"""A CA and a serving certificate for our Service, laid out as a kubernetes.io/tls Secret."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE, KEY_FILE, CA_FILE, CA_KEY_FILE = "tls.crt", "tls.key", "ca.crt", "ca.key"
CA_DAYS, SERVING_DAYS = 3650, 365
# A serving certificate this close to expiry is issued again, well before clients notice.
RENEW_BEFORE = dt.timedelta(days=30)
# Certificates start this far in the past, for clocks that run behind ours.
BACKDATE = dt.timedelta(minutes=5)
LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def service_names(service: str, namespace: str) -> list[str]:
    """Every name the API server may use for `service` in `namespace`."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def generate_ca(common_name: str = "mlflow-webhook-ca", days: int = CA_DAYS) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(common_name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving(ca: Pem, dns_names: list[str], ips: list[str], days: int = SERVING_DAYS) -> Pem:
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        _builder(dns_names[0], ca_cert.subject, key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_without_ca_key(dns_names: list[str], ips: list[str]) -> tuple[bytes, Pem]:
    """A CA certificate and the one serving pair it signs; the CA's key is dropped here.

    Nothing else can ever chain to that CA, so it lives as long as its certificate.
    """
    ca = generate_ca(days=SERVING_DAYS + 1)
    return ca.cert, issue_serving(ca, dns_names, ips)


def bundle(pem: bytes) -> list[bytes]:
    """Each certificate of a PEM bundle, on its own."""
    return [
        c.public_bytes(serialization.Encoding.PEM) for c in x509.load_pem_x509_certificates(pem)
    ]


def issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether `ca_pem` signed `cert_pem` (every one of our CAs has the same name)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def not_before(cert_pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_before_utc


def not_after(cert_pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def covers(cert_pem: bytes, dns_names: list[str], ips: list[str]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(dns_names) <= set(san.get_values_for_type(x509.DNSName)) and set(ips) <= have_ips


class CertDirError(Exception):
    """The certificate folder cannot be written: one line that names it and says why."""


def check_writable(directory: Path) -> None:
    """Fail at once, with the folder named, where generated certificates could not be written
    (a read-only root filesystem without its emptyDir, a Secret mounted read-only)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise CertDirError(
            f"cannot write to the certificate folder {directory}: {error.strerror or error}"
        ) from error


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` in one step, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pair(directory: Path, pem: Pem, cert_name: str, key_name: str) -> None:
    # The key first: a reader that sees the new certificate then finds its key already there.
    write_atomic(directory / key_name, pem.key, 0o600)
    write_atomic(directory / cert_name, pem.cert)


def ensure_self_signed(directory: Path, dns_names: list[str], ips: list[str]) -> list[str]:
    """Create whatever is missing, stale or too narrow; return the names of the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    ca_path, ca_key_path = directory / CA_FILE, directory / CA_KEY_FILE
    if (
        ca_path.exists()
        and ca_key_path.exists()
        and not_after(ca_path.read_bytes()) > _now() + RENEW_BEFORE
    ):
        ca = Pem(ca_path.read_bytes(), ca_key_path.read_bytes())
    else:
        ca = generate_ca()
        write_pair(directory, ca, CA_FILE, CA_KEY_FILE)
        written += [CA_FILE, CA_KEY_FILE]
    cert_path = directory / CERT_FILE
    if (
        not written
        and cert_path.exists()
        and (directory / KEY_FILE).exists()
        and not_after(cert_path.read_bytes()) > _now() + RENEW_BEFORE
        and covers(cert_path.read_bytes(), dns_names, ips)
    ):
        return written
    write_pair(directory, issue_serving(ca, dns_names, ips), CERT_FILE, KEY_FILE)
    return [*written, CERT_FILE, KEY_FILE]
