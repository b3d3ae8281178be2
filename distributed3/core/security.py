"""Secrets and TLS settings: what a peer must prove, and how the wire is encrypted.

* A **secret** is proven by the HMAC handshake of ``comm.py`` on every connection.
* :class:`TLS` holds a certificate, its key and a CA; with a CA, both sides must
  present a certificate that CA signed (mutual TLS).  Peers are named by address,
  so the CA, not the host name, is what is checked.

>>> tls = TLS(cert="node.pem", key="node.key", ca="ca.pem")
>>> tls
TLS(cert='node.pem', key='node.key', ca='ca.pem')
>>> TLS.coerce({"cert": "node.pem", "ca": "ca.pem"}).ca
'ca.pem'
>>> TLS.coerce(None) is None
True
"""
import functools
import hashlib
import hmac
import os
import secrets
import ssl
from dataclasses import dataclass


def normalize_secret(secret):
    """Bytes of a secret given as str or bytes; ``None`` for no secret.

    >>> normalize_secret("abc"), normalize_secret(""), normalize_secret(None)
    (b'abc', None, None)
    """
    if not secret:
        return None
    if isinstance(secret, str):
        secret = secret.encode()
    return bytes(secret)


def new_secret_file(path):
    """Write a fresh random secret to a new file readable by its owner only (0600).

    Refuses to overwrite an existing file.  Returns the secret as bytes.

    >>> import os, stat, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "secret")
    >>> len(new_secret_file(path)), oct(stat.S_IMODE(os.stat(path).st_mode))
    (64, '0o600')
    """
    secret = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    return secret


def read_secret_file(path):
    """The secret in ``path`` (surrounding whitespace removed); an empty file is an error."""
    with open(path, "rb") as f:
        secret = f.read().strip()
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return secret


@dataclass(frozen=True)
class TLS:
    """Certificate, key and CA files for TLS on every connection.

    ``cert``/``key``: this process's certificate chain and private key (a
    server needs them; a client presents them when given).  ``ca``: the
    authority peers' certificates must be signed by; when given, certificates
    are required in both directions.
    """

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @classmethod
    def coerce(cls, value):
        """A ``TLS`` from ``None``, a ``TLS`` or a dict with cert/key/ca."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"tls must be a distributed3.TLS or a dict, not {type(value).__name__}")

    @functools.lru_cache(maxsize=None)  # noqa: B019 -- a few frozen configs per process
    def server_context(self):
        """An ``ssl.SSLContext`` for accepting connections."""
        if not self.cert:
            raise ValueError("a TLS server needs a certificate (tls cert and key)")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if self.ca:
            ctx.load_verify_locations(self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    @functools.lru_cache(maxsize=None)  # noqa: B019
    def client_context(self):
        """An ``ssl.SSLContext`` for connecting; verifies the server against ``ca``."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False  # peers are addresses; the CA is the check
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        if not self.ca:
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def token_for(secret):
    """The dashboard token of a cluster with ``secret`` (None without one).

    >>> token_for(b"s3cret") == token_for(b"s3cret") != token_for(b"other")
    True
    >>> token_for(None) is None
    True
    """
    if not secret:
        return None
    secret = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(secret, b"distributed3 dashboard", hashlib.sha256).hexdigest()[:32]


def dashboard_link(host, port, secret=None):
    """``http://host:port/status`` with the token for ``secret``.

    >>> dashboard_link("127.0.0.1", 8790)
    'http://127.0.0.1:8790/status'
    """
    token = token_for(secret)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"http://{where}/status" + (f"?token={token}" if token else "")
