"""Certificates: automatic, custom, fingerprints."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest

from batchcrew.tls import TLS, certificate_matches, client_context
from tests.support.certificates import ca_signed_chain


def test_automatic_certificates_are_fresh_and_loadable() -> None:
    first, second = TLS.automatic(), TLS.automatic()
    assert first.fingerprint() != second.fingerprint()
    assert isinstance(first.server_context(), ssl.SSLContext)
    der = ssl.PEM_cert_to_DER_cert(first.certificate_pem.decode())
    assert first.fingerprint() == hashlib.sha256(der).hexdigest()


def test_custom_certificate_with_password(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    made = TLS.automatic()
    key = serialization.load_pem_private_key(made.key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2"),
    )
    (tmp_path / "cert.pem").write_bytes(made.certificate_pem)
    (tmp_path / "key.pem").write_bytes(encrypted)
    custom = TLS.custom(tmp_path / "cert.pem", tmp_path / "key.pem", password="hunter2")
    assert custom.fingerprint() == made.fingerprint()
    with pytest.raises(ValueError, match="do not load"):
        TLS.custom(tmp_path / "cert.pem", tmp_path / "key.pem", password="wrong")


def test_custom_certificate_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="certfile must be a readable PEM file"):
        TLS.custom(tmp_path / "missing.pem", tmp_path / "key.pem")
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("y")
    with pytest.raises(TypeError, match="password must be a string"):
        TLS.custom(tmp_path / "cert.pem", tmp_path / "key.pem", password=123)  # type: ignore[arg-type]


def test_fingerprint_check() -> None:
    assert certificate_matches(b"abc", hashlib.sha256(b"abc").hexdigest().upper())
    assert not certificate_matches(b"abd", hashlib.sha256(b"abc").hexdigest())
    assert not certificate_matches(None, hashlib.sha256(b"abc").hexdigest())
    assert client_context().verify_mode == ssl.CERT_NONE


def test_the_fingerprint_of_a_chain_is_its_first_certificates(tmp_path: Path) -> None:
    chain, key, leaf = ca_signed_chain(tmp_path)
    assert TLS.custom(chain, key).fingerprint() == hashlib.sha256(leaf).hexdigest()
