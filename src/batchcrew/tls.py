"""Transport security: the controller's certificate and the worker's pinned check of it.

The controller holds a `TLS` object; workers get only the certificate's SHA-256 fingerprint and
refuse any server whose certificate does not match it. No sockets are opened here.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TLS:
    """The controller's TLS settings.

    Use `TLS.automatic()` (the default: a fresh self-signed key pair made at start) or
    `TLS.custom(certfile, keyfile, password)` for a certificate of your own.

    Example:
        >>> tls = TLS.automatic()
        >>> len(tls.fingerprint())
        64
    """

    certificate_pem: bytes
    key_pem: bytes = field(repr=False)
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        """Shows what identifies the certificate, never the key or its password.

        Example:
            >>> "PRIVATE" in repr(TLS.automatic())
            False
        """
        return f"TLS(fingerprint={self.fingerprint()!r})"

    @classmethod
    def automatic(cls) -> TLS:
        """Make a fresh self-signed certificate (ECDSA P-256, valid for 30 days).

        Example:
            >>> TLS.automatic().certificate_pem.startswith(b"-----BEGIN CERTIFICATE-----")
            True
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchcrew controller")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        return cls(
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    @classmethod
    def custom(
        cls,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str],
        password: str | None = None,
    ) -> TLS:
        """Use a certificate and private key from PEM files (e.g. signed by your CA).

        Example:
            >>> import pathlib, tempfile
            >>> pair = TLS.automatic()  # here, the files your CA signed
            >>> folder = pathlib.Path(tempfile.mkdtemp())
            >>> _ = (folder / "controller.pem").write_bytes(pair.certificate_pem)
            >>> _ = (folder / "controller.key").write_bytes(pair.key_pem)
            >>> tls = TLS.custom(folder / "controller.pem", folder / "controller.key")
            >>> tls.fingerprint() == pair.fingerprint()
            True
            >>> import shutil; shutil.rmtree(folder)
        """
        certificate_path, key_path = Path(certfile), Path(keyfile)
        for argument, path in (("certfile", certificate_path), ("keyfile", key_path)):
            if not path.is_file():
                raise ValueError(
                    f"{argument} must be a readable PEM file; {str(path)!r} is not a file"
                )
        if password is not None and not isinstance(password, str):
            raise TypeError(f"password must be a string or None, not {type(password).__name__}")
        tls = cls(certificate_path.read_bytes(), key_path.read_bytes(), password)
        tls.server_context()  # fails now, with the reason, if the pair does not load
        return tls

    def fingerprint(self) -> str:
        """The SHA-256 fingerprint (hex) of the certificate, which workers pin.

        Example:
            >>> tls = TLS.automatic()
            >>> tls.fingerprint() == tls.fingerprint()
            True
        """
        # The first certificate: a chain file from a CA holds the controller's, then the CA's.
        text = self.certificate_pem.decode()
        start = text.find(ssl.PEM_HEADER)
        end = text.find(ssl.PEM_FOOTER, start)
        if start < 0 or end < 0:
            raise ValueError("the certificate is not in PEM form")
        first = text[start : end + len(ssl.PEM_FOOTER)]
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()

    def server_context(self) -> ssl.SSLContext:
        """An `ssl.SSLContext` for the controller's listening socket.

        Example:
            >>> TLS.automatic().server_context().minimum_version.name
            'TLSv1_2'
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain reads files only, so the key pair passes through a private temp folder.
        with tempfile.TemporaryDirectory() as folder:
            certificate_path = Path(folder, "certificate.pem")
            key_path = Path(folder, "key.pem")
            certificate_path.write_bytes(self.certificate_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(self.key_pem)
            try:
                context.load_cert_chain(certificate_path, key_path, password=self.password)
            except ssl.SSLError as error:
                raise ValueError(f"the TLS certificate and key do not load: {error}") from error
        return context


def client_context() -> ssl.SSLContext:
    """The worker's TLS context: trust comes from the pinned fingerprint, not from a CA.

    Example:
        >>> client_context().check_hostname
        False
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def certificate_matches(certificate_der: bytes | None, fingerprint: str) -> bool:
    """True when a peer's DER certificate has the expected SHA-256 fingerprint.

    Example:
        >>> certificate_matches(b"abc", hashlib.sha256(b"abc").hexdigest())
        True
    """
    if not certificate_der:
        return False
    actual = hashlib.sha256(certificate_der).hexdigest()
    return hmac.compare_digest(actual, fingerprint.lower())
