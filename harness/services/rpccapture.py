"""``serve --rpc-capture``: appends each virtual connection's inner PDUs to ``STATE_DIR/rpc/<vc>.bin`` (format:
harness.protocols.rpccapture), for ``mockex export pcap``.

Nothing is buffered, so a running server's captures can be exported. Files are 0600: an NTLM exchange, and with
RPC authentication level none every stub in the clear, are inside. A file name already taken (a previous run in the
same state directory, or two cookies sharing 8 hex digits) gets a ``-N`` suffix. At most ``MAX_OPEN`` files stay
open; the least recently opened is closed (and reopened for appending when its connection speaks again)."""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Callable, Dict

from harness.protocols.rpccapture import CAPTURE_DIR, SUFFIX, encode_record, file_header

MAX_OPEN = 32


class RpcCapture:
    def __init__(self, state_dir: str, clock: Callable[[], float] = time.time) -> None:
        self.directory = os.path.join(state_dir, CAPTURE_DIR)
        self._clock = clock
        self._paths: Dict[bytes, str] = {}
        self._open: "OrderedDict[bytes, int]" = OrderedDict()

    def __call__(self, cookie: bytes, from_client: bool, pdu: bytes) -> None:
        os.write(self._fd(cookie), encode_record(self._clock(), from_client, pdu))

    def _fd(self, cookie: bytes) -> int:
        fd = self._open.get(cookie)
        if fd is not None:
            return fd
        if len(self._open) >= MAX_OPEN:
            os.close(self._open.popitem(last=False)[1])
        path = self._paths.get(cookie)
        if path is None:
            from harness.protocols.rpcchannel import cookie_label  # loaded with the proxy that calls us
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd, path = self._create(cookie_label(cookie))
            os.write(fd, file_header(cookie))
            self._paths[cookie] = path
        else:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._open[cookie] = fd
        return fd

    def _create(self, label: str):
        for attempt in range(1, 1000):
            name = label + (f"-{attempt}" if attempt > 1 else "") + SUFFIX
            path = os.path.join(self.directory, name)
            try:
                return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600), path
            except FileExistsError:
                continue
        raise FileExistsError(f"no free capture file name for {label} in {self.directory}")

    def close(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1])
