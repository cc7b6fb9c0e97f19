"""The public port picks up a renewed server certificate (`hub pki renew`) without a restart of `hub serve`."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from protocols.cert_expiry import load_certificate
from protocols.errors import ConfigError

log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class CertificateReloader:
    """Polls the certificate file; on a change loads certificate + key into the live TLS context.

    New handshakes then present the new certificate; open connections keep theirs until they close.
    `context` is called until it returns the server's SSLContext (uvicorn builds it once it starts).
    """

    def __init__(
        self,
        context: Callable[[], ssl.SSLContext | None],
        cert: Path,
        key: Path,
        *,
        interval: float = 2.0,
    ) -> None:
        self.context, self.cert, self.key, self.interval = context, cert, key, interval
        self.stop = threading.Event()
        self.loaded = _stamp(cert)
        self.reloads = 0
        self._thread = threading.Thread(target=self._run, name="cert-reloader", daemon=True)

    def start(self) -> CertificateReloader:
        self._thread.start()
        return self

    def check(self) -> bool:
        """Reload when the file changed since the last load; True when it did."""
        ctx, stamp = self.context(), _stamp(self.cert)
        if ctx is None or stamp is None or stamp == self.loaded:
            return False
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
            serial = load_certificate(self.cert).serial_number
        except (ssl.SSLError, OSError, ConfigError) as exc:
            # A key and certificate caught between their two renames do not match: try again next tick.
            log.warning("renewed server certificate not loaded yet (%s); retrying", exc)
            return False
        self.loaded = stamp
        self.reloads += 1
        log.info("server certificate reloaded from %s (serial %x)", self.cert, serial)
        return True

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.check()
