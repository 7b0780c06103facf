"""The overall deadline of one outbound request: DNS lookup, connect, send and read together.

Pure Python: nothing from Django, no torch. Used by :mod:`videojobs.net.addresses` (a lookup
may not outlive it) and :mod:`videojobs.net.safe_http` (whose connections it watches).
"""

from __future__ import annotations

import socket
import threading
import time

from videojobs.errors import ErrorCode, ImageInputError

__all__ = ["Deadline"]


class Deadline:
    """Overall deadline; at expiry a watchdog shuts down every socket it was given.

    ``shutdown`` (unlike ``close``) is safe while another thread is blocked in ``recv``
    on the same socket: the blocked call returns at once.  The watchdog holds ``dup``-ed
    descriptors, so it never touches a descriptor number the request has closed and the
    process may have reused. ``subject`` names the request field in :meth:`timeout_error`.
    """

    def __init__(self, seconds: float, subject: str = "image_url") -> None:
        self.seconds = seconds
        self.subject = subject
        self.expires = time.monotonic() + seconds
        self.fired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def expired(self) -> bool:
        return self.fired or self.remaining() <= 0

    def timeout_error(self) -> ImageInputError:
        return ImageInputError(f"{self.subject} timed out after {self.seconds:g} s", ErrorCode.IMAGE_TIMEOUT)

    def watch(self, sock: socket.socket) -> None:
        try:
            dup = sock.dup()
        except OSError:
            return
        with self._lock:
            self._socks.append(dup)
            fired = self.fired
        if fired:
            self._shutdown(dup)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            socks = list(self._socks)
        for sock in socks:
            self._shutdown(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass
