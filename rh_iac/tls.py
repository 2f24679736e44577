"""TLS material for Dask clusters: one CA per stack, and per cluster a certificate for each role.

Dask traffic is mutual TLS everywhere, local stacks included: a scheduler that anyone on the host could reach runs
their code. Distributed verifies both ends against the CA (``ssl.CERT_REQUIRED``), so only holders of a certificate
signed by the stack's CA can connect. Keys are written 0600 in directories 0700; nothing here is ever logged.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Role = Literal["scheduler", "worker", "client"]
ROLES: tuple[Role, ...] = ("scheduler", "worker", "client")

_VALIDITY = _dt.timedelta(days=365)
_RENEW_BEFORE = _dt.timedelta(days=7)


@dataclass(frozen=True)
class ClusterTLS:
    """Paths of a cluster's CA certificate and of each role's certificate and key."""

    ca_file: str
    scheduler_cert: str
    scheduler_key: str
    worker_cert: str
    worker_key: str
    client_cert: str
    client_key: str

    def security(self, role: Role = "client"):
        """A ``distributed.Security`` for ``role`` that requires encryption and verifies the peer."""
        from distributed import Security

        cert, key = getattr(self, f"{role}_cert"), getattr(self, f"{role}_key")
        return Security(
            require_encryption=True,
            tls_ca_file=self.ca_file,
            **{f"tls_{role}_cert": cert, f"tls_{role}_key": key},
        )

    def all_roles_security(self):
        """A ``distributed.Security`` holding every role's certificate: what an in-process LocalCluster needs."""
        from distributed import Security

        return Security(
            require_encryption=True,
            tls_ca_file=self.ca_file,
            **{f"tls_{role}_{part}": getattr(self, f"{role}_{part}") for role in ROLES for part in ("cert", "key")},
        )

    def cli_args(self, role: Role) -> list[str]:
        """Arguments for ``dask scheduler`` / ``dask worker``."""
        return [
            "--tls-ca-file", self.ca_file,
            "--tls-cert", getattr(self, f"{role}_cert"),
            "--tls-key", getattr(self, f"{role}_key"),
        ]

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> "ClusterTLS":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_is_fresh(cert_path: Path, ca_cert=None) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - _RENEW_BEFORE < _dt.datetime.now(_dt.timezone.utc):
        return False
    if ca_cert is not None:
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, Exception):  # noqa: BLE001 - any verification failure means re-issue
            return False
    return True


def ensure_stack_ca(stack_dir: Path, stack: str):
    """Create (or reuse) the stack's CA under ``stack_dir/tls``; returns ``(cert_path, cert, key)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    tls_dir = _private_dir(Path(stack_dir) / "tls")
    cert_path, key_path = tls_dir / "ca.pem", tls_dir / "ca-key.pem"
    if key_path.exists() and _cert_is_fresh(cert_path):
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return cert_path, x509.load_pem_x509_certificate(cert_path.read_bytes()), key

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rh_iac stack {stack} CA")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, cert, key


def issue_cluster_tls(stack_dir: Path, stack: str, cluster: str, hosts: tuple[str, ...] = ("127.0.0.1",)) -> ClusterTLS:
    """Certificates for a cluster's scheduler, workers and clients, signed by the stack CA (reused while valid)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_path, ca_cert, ca_key = ensure_stack_ca(stack_dir, stack)
    out = _private_dir(Path(stack_dir) / "resources" / cluster / "tls")
    paths: dict[str, str] = {"ca_file": str(ca_path)}
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))

    for role in ROLES:
        cert_path, key_path = out / f"{role}.pem", out / f"{role}-key.pem"
        paths[f"{role}_cert"], paths[f"{role}_key"] = str(cert_path), str(key_path)
        if key_path.exists() and _cert_is_fresh(cert_path, ca_cert):
            continue
        key = _new_key()
        now = _dt.datetime.now(_dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{stack}/{cluster}/{role}")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return ClusterTLS(**paths)
