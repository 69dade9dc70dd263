"""Certificates as a company CA would issue them: a private CA, a controller certificate it
signs, and the chain file (the controller's certificate first, then the CA's) that a CA hands
out and `TLS.custom` reads."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


def ca_signed_chain(folder: Path) -> tuple[Path, Path, bytes]:
    """Write `chain.pem` and `controller.key`; return their paths and the controller
    certificate's DER. The certificate's DER is a whole number of base64 groups (no `=`
    padding), the case where reading the whole chain as one certificate goes wrong."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Example CA", ca_key, "Example CA", ca_key)
    for attempt in range(200):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(f"controller-{attempt}.internal", key, "Example CA", ca_key)
        der = leaf.public_bytes(serialization.Encoding.DER)
        if len(der) % 3 == 0:
            break
    else:
        raise AssertionError("no certificate of the wanted length in 200 attempts")
    chain = folder / "chain.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    key_path = folder / "controller.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return chain, key_path, der
