"""DSSE envelopes of in-toto statements, signed and verified with securesystemslib.

Keys are PEM text: the private key comes from an Airflow Connection (the tasks layer reads it), the
trusted public keys from settings or from that private key. ed25519, ECDSA and RSA keys all work
(securesystemslib decides the scheme from the key). Nothing here logs a key or a payload.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from airflow_image_factory.exceptions import EvidenceError, SigningKeyInvalid
from airflow_image_factory.policy.evidence import PAYLOAD_TYPE


def _serialization():
    from cryptography.hazmat.primitives import serialization

    return serialization


def generate_key_pair() -> tuple[str, str]:
    """A new ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    serialization = _serialization()
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


def public_key(pem: str, *, where: str = "a public key") -> SSlibKey:
    """A trusted key from its PEM text; a SigningKeyInvalid naming ``where`` when it is not one."""
    try:
        return SSlibKey.from_crypto(_serialization().load_pem_public_key(pem.strip().encode()))
    except Exception as exc:  # ValueError, UnsupportedAlgorithm: say which key, never its text
        raise SigningKeyInvalid(f"{where} is not a PEM public key ({type(exc).__name__})") from None


@dataclass(frozen=True)
class EvidenceSigner:
    """Signs statements with one private key; ``keyid`` is what envelopes name it by."""

    _signer: CryptoSigner = field(repr=False)  # holds the private key: never in a repr or a log
    public_pem: str

    @classmethod
    def from_pem(cls, pem: str, *, where: str = "the signing key") -> EvidenceSigner:
        serialization = _serialization()
        try:
            private = serialization.load_pem_private_key(pem.strip().encode(), password=None)
            key = SSlibKey.from_crypto(private.public_key())
            public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
            return cls(CryptoSigner(private, key), public_pem.decode())
        except Exception as exc:
            raise SigningKeyInvalid(
                f"{where} is not an unencrypted PEM private key of ed25519, ECDSA or RSA ({type(exc).__name__})"
            ) from None

    @property
    def keyid(self) -> str:
        return self._signer.public_key.keyid

    @property
    def public_key(self) -> SSlibKey:
        return self._signer.public_key

    def sign(self, statement: Mapping[str, Any]) -> bytes:
        """The DSSE envelope (JSON bytes) of ``statement``."""
        payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
        envelope = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
        envelope.sign(self._signer)
        return json.dumps(envelope.to_dict(), sort_keys=True).encode()


@dataclass(frozen=True)
class EvidenceVerifier:
    """Opens envelopes signed by any of the trusted keys."""

    keys: tuple[SSlibKey, ...]

    @classmethod
    def from_pems(cls, pems: Iterable[str]) -> EvidenceVerifier:
        keys = tuple(public_key(pem, where=f"trusted public key {n}") for n, pem in enumerate(pems, 1))
        if not keys:
            raise SigningKeyInvalid("no trusted public key to verify evidence with")
        return cls(keys)

    def open(self, raw: bytes) -> dict[str, Any]:
        """The statement inside the envelope ``raw`` when a trusted key signed it; EvidenceError saying
        why not otherwise (not an envelope, another payload type, no trusted signature)."""
        try:
            document = json.loads(raw)
            envelope = Envelope.from_dict(json.loads(raw))  # from_dict empties the dict it is given
        except Exception as exc:
            raise EvidenceError(f"not a DSSE envelope ({type(exc).__name__})") from None
        if envelope.payload_type != PAYLOAD_TYPE:
            raise EvidenceError(f"payload type {envelope.payload_type!r}, not an in-toto statement")
        try:
            envelope.verify(list(self.keys), 1)
        except Exception:
            signers = ", ".join(s.get("keyid", "?")[:12] for s in document.get("signatures") or []) or "none"
            raise EvidenceError(f"no valid signature of a trusted key (signed by: {signers})") from None
        try:
            return json.loads(envelope.payload)
        except ValueError:
            raise EvidenceError("the signed payload is not JSON") from None

