"""The relay's keys and its clients, in its state directory.

    relay.key, relay.pem        the relay's own key and self-signed certificate; clients pin
                                its SHA-256, so no CA is involved
    clients-ca.key, clients-ca.pem
                                signs each client's certificate (the inner TLS asks for one)
    clients.json                per client: certificate fingerprint, access-token secret,
                                added / revoked; only listed, unrevoked clients get in
    path                        the secret WebSocket path

    replay.db                   tokens seen, until they expire (replay.py)

The directory is 0700; private keys, clients.json, path and replay.db are 0600. Nothing here
is ever logged. `secure()` puts right a directory or file others can read (an older relay
wrote `path` 0644; a directory made by hand or by a volume is often 0755) and says so, and
refuses to go on with a secret it cannot make private.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import secrets
import ssl
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from transports.base import Endpoint
from transports.fronted.accesskey import AccessKey

from ..files import write_private

__all__ = ["ClientRecord", "RelayKeys", "RelayKeysError"]

log = logging.getLogger("detour.relay")

VALIDITY = datetime.timedelta(days=10 * 365)
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class RelayKeysError(Exception):
    """The state directory is missing something, or a request about clients cannot be met."""


@dataclass
class ClientRecord:
    fingerprint: str  # SHA-256 of the client's certificate (DER)
    token: str  # hex access-token secret
    added: float
    revoked: float | None = None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class RelayKeys:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.relay_key = directory / "relay.key"
        self.relay_cert = directory / "relay.pem"
        self.ca_key = directory / "clients-ca.key"
        self.ca_cert = directory / "clients-ca.pem"
        self.clients_file = directory / "clients.json"
        self.path_file = directory / "path"
        self.replay_file = directory / "replay.db"
        self._seen: tuple[tuple[int, int, int], dict[str, ClientRecord]] | None = None
        self._path_seen: tuple[tuple[int, int, int], str] | None = None

    def exists(self) -> bool:
        return all(
            p.exists()
            for p in (self.relay_key, self.relay_cert, self.ca_key, self.ca_cert, self.path_file)
        )

    def generate(self, *, force: bool = False) -> None:
        """keygen: the relay's key and certificate, the clients' CA, a secret path."""
        if self.exists() and not force:
            raise RelayKeysError(
                f"{self.directory} already has the relay's keys (keygen --force replaces them, "
                "and every access key issued so far stops working)"
            )
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.secure()
        relay_key = ec.generate_private_key(ec.SECP256R1())
        relay_cert = _certificate(
            "relay", relay_key, None, ca=False, usage=ExtendedKeyUsageOID.SERVER_AUTH
        )
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate("detour relay clients", ca_key, None, ca=True, usage=None)
        write_private(self.relay_key, _key_pem(relay_key))
        self.relay_cert.write_bytes(relay_cert.public_bytes(serialization.Encoding.PEM))
        write_private(self.ca_key, _key_pem(ca_key))
        self.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        write_private(self.path_file, "/" + secrets.token_urlsafe(18) + "\n")
        write_private(self.clients_file, b"{}\n")

    def secure(self) -> list[str]:
        """Make the directory 0700 and the secret files in it 0600 where they are not; returns
        (and logs as warnings) what was put right. Raises RelayKeysError for a secret file
        others can read that this process cannot change (another owner, a read-only volume);
        a directory it cannot change is only a warning when every secret in it is private."""
        fixed: list[str] = []
        secrets_ = (
            self.relay_key, self.ca_key, self.clients_file, self.path_file, self.replay_file,
        )  # fmt: skip
        for path, private in ((self.directory, 0o700), *((p, 0o600) for p in secrets_)):
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                continue
            if not mode & 0o077:
                continue
            what = f"{path} was readable by others (mode {mode:04o})"
            try:
                os.chmod(path, private)
            except OSError as exc:
                if path == self.directory:
                    log.warning("%s and cannot be changed (%s): chmod %o %s", what, exc.strerror,
                                private, path)  # fmt: skip
                    continue
                raise RelayKeysError(
                    f"{what} and cannot be made private ({exc.strerror or exc}): "
                    f"run `chmod {private:o} {path}` as its owner"
                ) from None
            log.warning("%s: now %04o", what, private)
            fixed.append(str(path))
        return fixed

    def _require(self) -> None:
        if not self.exists():
            raise RelayKeysError(
                f"no relay keys in {self.directory}: run `detour relay keygen` first"
            )

    @property
    def path(self) -> str:
        self._require()
        return self.path_file.read_text().strip()

    @property
    def pin(self) -> str:
        self._require()
        cert = self._certificate_file(self.relay_cert)
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def _damaged(self, path: Path, what: str) -> RelayKeysError:
        """A key or certificate that cannot be read. Not made anew here: the clients' access
        keys pin the relay's certificate and carry certificates from the clients' CA, so new
        ones would lock every client out."""
        return RelayKeysError(
            f"{path} is damaged ({what}): restore it from a backup of {self.directory}, or "
            "run `detour relay keygen --force` to make new keys (every access key issued so "
            "far then stops working: issue new ones with add-client)"
        )

    def _certificate_file(self, path: Path) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            raise self._damaged(path, "not a PEM certificate") from None

    def _key_file(self, path: Path) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        except (ValueError, TypeError):  # TypeError: encrypted, with no password to give
            raise self._damaged(path, "not an unencrypted PEM private key") from None
        except UnsupportedAlgorithm:
            raise self._damaged(path, "a key of a kind detour does not make") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise self._damaged(path, "not an EC private key")
        return key

    def _check_pair(self, key_file: Path, cert_file: Path) -> None:
        """RelayKeysError naming the file unless the key and certificate read and match."""
        cert = self._certificate_file(cert_file)
        key = self._key_file(key_file)
        if cert.public_key() != key.public_key():
            raise self._damaged(key_file, f"it is not the key of {cert_file.name}")

    # --- clients --------------------------------------------------------------------------

    def clients(self) -> dict[str, ClientRecord]:
        self._require()
        try:
            data = json.loads(self.clients_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise RelayKeysError(f"{self.clients_file} is damaged: {exc}") from None
        try:
            return {name: ClientRecord(**record) for name, record in data.items()}
        except (AttributeError, TypeError):  # JSON, but not {name: {fingerprint, token, ...}}
            raise RelayKeysError(
                f"{self.clients_file} is damaged: not a table of clients"
            ) from None

    def _save(self, clients: dict[str, ClientRecord]) -> None:
        data = {name: record.__dict__ for name, record in sorted(clients.items())}
        write_private(self.clients_file, (json.dumps(data, indent=1) + "\n").encode())

    def add_client(self, name: str, address: Endpoint, front: str, host: str) -> AccessKey:
        """Issue a client credential and return its access key (shown once, never stored)."""
        self._require()
        if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
            raise RelayKeysError(
                f"{name!r}: a client name is 1-64 letters, digits, '.', '_' or '-'"
            )
        clients = self.clients()
        if name in clients and clients[name].revoked is None:
            raise RelayKeysError(f"there is already a client {name!r} (revoke it first)")
        # Everything the access key needs is read before the client is recorded: a damaged
        # file leaves no client behind that nobody has the key of.
        path, pin = self.path, self.pin
        self._check_pair(self.relay_key, self.relay_cert)
        self._check_pair(self.ca_key, self.ca_cert)
        ca_key = self._key_file(self.ca_key)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            name,
            key,
            ("detour relay clients", ca_key),
            ca=False,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        token = secrets.token_bytes(32)
        clients[name] = ClientRecord(hashlib.sha256(der).hexdigest(), token.hex(), time.time())
        self._save(clients)
        return AccessKey(
            address=address,
            front=front,
            host=host,
            path=path,
            pin=pin,
            name=name,
            token=token,
            cert=der,
            key=key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    def revoke(self, name: str) -> None:
        clients = self.clients()
        if name not in clients or clients[name].revoked is not None:
            active = ", ".join(n for n, r in clients.items() if r.revoked is None) or "none"
            raise RelayKeysError(f"no active client {name!r} (active: {active})")
        clients[name].revoked = time.time()
        self._save(clients)

    def active(self) -> dict[str, ClientRecord]:
        return {n: r for n, r in self.clients().items() if r.revoked is None}

    def current(self) -> dict[str, ClientRecord]:
        """The active clients as clients.json says now, read again only when the file has
        changed (one stat per call: the relay asks at every new connection in a tunnel).
        `add-client` and `revoke` replace the file, so a change is a new inode."""
        try:
            info = os.stat(self.clients_file)
        except FileNotFoundError:
            return {}
        version = (info.st_ino, info.st_mtime_ns, info.st_size)
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, self.active())
        return self._seen[1]

    def current_path(self) -> str:
        """`path` as the file says now, read again only when it has changed (one stat per
        call: the relay asks at every request)."""
        try:
            info = os.stat(self.path_file)
        except FileNotFoundError:
            self._require()  # says what is missing
            raise
        version = (info.st_ino, info.st_mtime_ns, info.st_size)
        if self._path_seen is None or self._path_seen[0] != version:
            self._path_seen = (version, self.path)
        return self._path_seen[1]

    def server_context(self) -> ssl.SSLContext:
        """The inner TLS, relay side: TLS 1.3 only, a client certificate from our CA required."""
        self._require()
        self._check_pair(self.relay_key, self.relay_cert)
        self._certificate_file(self.ca_cert)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            context.load_cert_chain(self.relay_cert, self.relay_key)
        except ssl.SSLError as exc:  # read above, yet not for OpenSSL
            raise self._damaged(self.relay_key, exc.reason or str(exc)) from None
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=str(self.ca_cert))
        except ssl.SSLError as exc:
            raise self._damaged(self.ca_cert, exc.reason or str(exc)) from None
        return context
