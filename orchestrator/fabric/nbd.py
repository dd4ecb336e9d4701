"""A read-only NBD client (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md): the
fixed-newstyle handshake, structured replies, `NBD_CMD_READ` and `NBD_CMD_BLOCK_STATUS` over one
metadata context (QEMU's `qemu:dirty-bitmap:NAME`). It reads the exports QEMU's NBD server and
`qemu-nbd` serve over a Unix socket; what it does not need (writes, TLS, pipelining) it does not do.

One request is in flight per connection: a reader wanting parallel reads opens one connection per
thread (QEMU serves read-only exports to many clients at once). Everything the server sends is
checked against what was asked (offsets, lengths, cookies) before it is used.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path
from types import TracebackType

from orchestrator.errors import OrchestratorError

NBDMAGIC, IHAVEOPT, REPLY_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_GO, OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT = 7, 8, 10
REP_ACK, REP_INFO, REP_META_CONTEXT = 1, 3, 4
INFO_EXPORT = 0
REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC = 0x25609513, 0x67446698, 0x668E33EF
CMD_READ, CMD_DISC, CMD_BLOCK_STATUS = 0, 2, 7
REPLY_FLAG_DONE = 1
CHUNK_NONE, CHUNK_DATA, CHUNK_HOLE, CHUNK_BLOCK_STATUS = 0, 1, 2, 5
CHUNK_ERROR_BIT = 1 << 15
MAX_REQUEST = 32 * 1024 * 1024  # QEMU's largest read; the client never asks for more at once
MAX_OPTION_REPLY = 64 * 1024


class NbdError(OrchestratorError):
    def __init__(self, message: str) -> None:
        super().__init__("NbdReadFailed", message)


class NbdClient:
    """A connection to one export. `meta_context`: a metadata context to negotiate for `extents`."""

    def __init__(self, path: Path | str, export: str, meta_context: str = "", timeout: float = 60.0) -> None:
        """`path`: the server's Unix socket, or "@name" for one in Linux's abstract namespace."""
        self.path, self.export, self.meta_context = path, export, meta_context
        self.size = 0
        self._context_id: int | None = None
        self._cookie = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            address = str(path)
            self._sock.connect("\0" + address[1:] if address.startswith("@") else address)
            self._handshake()
        except OSError as exc:
            self._sock.close()
            raise NbdError(f"NBD export {export!r} at {path} cannot be read ({exc.strerror or exc})") from None
        except NbdError:
            self._sock.close()
            raise

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the server drops a client whose socket closes
            self._send_request(CMD_DISC, 0, 0)
        self._sock.close()

    # -- handshake --------------------------------------------------------------------------------

    def _handshake(self) -> None:
        magic, opt, flags = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or opt != IHAVEOPT or not flags & FLAG_FIXED_NEWSTYLE:
            raise NbdError(f"{self.path} is not a fixed-newstyle NBD server")
        self._sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES)))
        self._option(OPT_STRUCTURED_REPLY, b"")
        if self._expect_ack(OPT_STRUCTURED_REPLY) is not None:
            raise NbdError(f"{self.path}: the NBD server sent data with its structured-reply answer")
        if self.meta_context:
            self._set_meta_context()
        name = self.export.encode()
        self._option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        while True:
            kind, data = self._option_reply(OPT_GO)
            if kind == REP_ACK:
                break
            if kind == REP_INFO and len(data) >= 12 and struct.unpack(">H", data[:2])[0] == INFO_EXPORT:
                self.size = struct.unpack(">Q", data[2:10])[0]

    def _set_meta_context(self) -> None:
        name, query = self.export.encode(), self.meta_context.encode()
        body = struct.pack(">I", len(name)) + name + struct.pack(">II", 1, len(query)) + query
        self._option(OPT_SET_META_CONTEXT, body)
        while True:
            kind, data = self._option_reply(OPT_SET_META_CONTEXT)
            if kind == REP_ACK:
                break
            if kind == REP_META_CONTEXT and len(data) >= 4 and data[4:] == query:
                self._context_id = struct.unpack(">I", data[:4])[0]
        if self._context_id is None:
            raise NbdError(f"NBD export {self.export!r} at {self.path} has no metadata context {self.meta_context!r}")

    def _option(self, option: int, data: bytes) -> None:
        self._sock.sendall(struct.pack(">QII", IHAVEOPT, option, len(data)) + data)

    def _option_reply(self, option: int) -> tuple[int, bytes]:
        magic, got, kind, length = struct.unpack(">QIII", self._recv(20))
        if magic != REPLY_MAGIC or got != option or length > MAX_OPTION_REPLY:
            raise NbdError(f"{self.path}: malformed NBD option reply")
        data = self._recv(length)
        if kind & (1 << 31):
            why = data.decode(errors="replace")[:200] or f"error {kind & 0x7FFFFFFF}"
            raise NbdError(f"NBD export {self.export!r} at {self.path} refused option {option}: {why}")
        return kind, data

    def _expect_ack(self, option: int) -> bytes | None:
        kind, data = self._option_reply(option)
        return None if kind == REP_ACK and not data else data

    # -- transmission -----------------------------------------------------------------------------

    def read_into(self, buffer: memoryview, offset: int) -> int:
        """Fill `buffer` from `offset` (holes as zeros); how many bytes, fewer at the export's end."""
        length = max(0, min(len(buffer), self.size - offset))
        done = 0
        while done < length:
            step = min(length - done, MAX_REQUEST)
            self._read_chunked(buffer[done : done + step], offset + done)
            done += step
        return length

    def _read_chunked(self, view: memoryview, offset: int) -> None:
        """One read; data chunks are received straight into `view` (no copy of their bytes)."""
        cookie = self._send_request(CMD_READ, offset, len(view))
        covered, done = 0, False
        while not done:
            flags, kind, length = self._chunk_header(cookie)
            done = bool(flags & REPLY_FLAG_DONE)
            if kind == CHUNK_DATA:
                if length < 8:
                    raise NbdError(f"{self.path}: a short NBD reply chunk")
                at = struct.unpack(">Q", self._recv(8))[0] - offset
                self._inside(at, length - 8, len(view))
                self._recv_into(view[at : at + length - 8])
                covered += length - 8
                continue
            payload = self._payload(kind, length)
            if kind == CHUNK_HOLE:
                at, size = struct.unpack(">QI", self._take(payload, 12))
                self._inside(at - offset, size, len(view))
                view[at - offset : at - offset + size] = bytes(size)
                covered += size
            elif kind != CHUNK_NONE:
                raise NbdError(f"{self.path}: unexpected NBD reply chunk {kind} to a read")
        if covered != len(view):
            raise NbdError(f"{self.path}: the NBD server answered {covered} of {len(view)} bytes at {offset}")

    def extents(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        """(offset, length, flags) of the metadata context over [offset, offset + length): every
        byte of the range, asked for again where the server answered for less."""
        if self._context_id is None:
            raise NbdError(f"{self.path}: no metadata context was negotiated")
        found: list[tuple[int, int, int]] = []
        end = min(offset + length, self.size)
        at = offset
        while at < end:
            step = min(end - at, 0xFFFFFFFF & ~0xFFFF)
            cookie = self._send_request(CMD_BLOCK_STATUS, at, step)
            start = at
            for kind, payload in self._chunks(cookie):
                if kind == CHUNK_BLOCK_STATUS:
                    if struct.unpack(">I", self._take(payload, 4))[0] != self._context_id:
                        continue
                    for i in range(4, len(payload) - 7, 8):
                        size, flags = struct.unpack(">II", payload[i : i + 8])
                        if size == 0 or at >= end:
                            continue
                        size = min(size, end - at)
                        found.append((at, size, flags))
                        at += size
                elif kind != CHUNK_NONE:
                    raise NbdError(f"{self.path}: unexpected NBD reply chunk {kind} to a block status")
            if at == start:
                raise NbdError(f"{self.path}: the NBD server gave no block status at {at}")
        return found

    def _send_request(self, command: int, offset: int, length: int) -> int:
        self._cookie += 1
        self._sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, command, self._cookie, offset, length))
        return self._cookie

    def _chunks(self, cookie: int) -> list[tuple[int, bytes]]:
        chunks: list[tuple[int, bytes]] = []
        while True:
            flags, kind, length = self._chunk_header(cookie)
            chunks.append((kind, self._payload(kind, length)))
            if flags & REPLY_FLAG_DONE:
                return chunks

    def _chunk_header(self, cookie: int) -> tuple[int, int, int]:
        """The next reply chunk's flags, type and length, for the request `cookie`."""
        magic = struct.unpack(">I", self._recv(4))[0]
        if magic == SIMPLE_REPLY_MAGIC:  # only for an error, once structured replies are on
            error, got = struct.unpack(">IQ", self._recv(12))
            self._check_cookie(got, cookie)
            raise NbdError(f"{self.path}: the NBD server failed the request (errno {error})")
        if magic != STRUCTURED_REPLY_MAGIC:
            raise NbdError(f"{self.path}: malformed NBD reply")
        flags, kind, got, length = struct.unpack(">HHQI", self._recv(16))
        self._check_cookie(got, cookie)
        if length > MAX_REQUEST + 64:
            raise NbdError(f"{self.path}: an NBD reply chunk of {length} bytes")
        return flags, kind, length

    def _payload(self, kind: int, length: int) -> bytes:
        payload = self._recv(length)
        if kind & CHUNK_ERROR_BIT:
            error = struct.unpack(">I", self._take(payload, 4))[0]
            why = payload[6:].decode(errors="replace")[:200]
            raise NbdError(f"{self.path}: the NBD server failed the request (errno {error}: {why})")
        return payload

    def _check_cookie(self, got: int, cookie: int) -> None:
        if got != cookie:
            raise NbdError(f"{self.path}: an NBD reply to a request never sent")

    def _inside(self, at: int, size: int, length: int) -> None:
        if at < 0 or at + size > length:
            raise NbdError(f"{self.path}: an NBD reply chunk outside the range asked for")

    def _take(self, payload: bytes, size: int) -> bytes:
        if len(payload) < size:
            raise NbdError(f"{self.path}: a short NBD reply chunk")
        return payload[:size]

    def _recv_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self._sock.recv_into(view[got:])
            if not n:
                raise NbdError(f"{self.path}: the NBD server closed the connection")
            got += n

    def _recv(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            got = self._sock.recv(min(size - len(data), 4 * 1024 * 1024))
            if not got:
                raise NbdError(f"{self.path}: the NBD server closed the connection")
            data += got
        return bytes(data)
