"""A PostgreSQL server impostor for tests: it speaks just enough of the wire protocol (v3) to ask a client for a
password the way a misconfigured or hostile server would, and records every byte it receives.

Modes:

- ``cleartext``: answers the startup message with AuthenticationCleartextPassword;
- ``md5``: AuthenticationMD5Password with a random salt; a correct MD5 response logs in (AuthenticationOk, a few
  ParameterStatus, BackendKeyData, ReadyForQuery), a wrong one is refused as PostgreSQL would (28P01);
- ``trust``: AuthenticationOk at once, no password asked;
- ``hang``: accepts the TCP connection and never answers (a stopped server whose kernel still accepts).

TLS is never offered: an SSLRequest or GSSENCRequest gets ``N``, as from a server without TLS. Queries are not
served; a logged-in session can only be closed. Use it as a context manager::

    with FakePgServer("cleartext") as server:
        ...connect to 127.0.0.1:server.port...
    assert b"password" not in server.transcript
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["cleartext", "md5", "trust", "hang"]

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5 = 0, 3, 5


def md5_response(user: str, password: str, salt: bytes) -> bytes:
    """What a client sends for AuthenticationMD5Password: ``md5`` + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt, usedforsecurity=False).hexdigest().encode()


@dataclass
class Connection:
    """One client connection as the server saw it."""

    received: bytearray = field(default_factory=bytearray)
    startup: dict[str, str] = field(default_factory=dict)
    tls_requested: bool = False
    asked: str | None = None  # the authentication request sent: "cleartext", "md5", "ok"
    password_message: bytes | None = None  # the body of the client's PasswordMessage ('p'), if it sent one
    logged_in: bool = False
    closed: threading.Event = field(default_factory=threading.Event)  # the server has read all the client sent


class _Closed(Exception):
    pass


class FakePgServer:
    def __init__(self, mode: Mode, *, user: str = "", password: str = "") -> None:
        self.mode = mode
        self._user, self._password = user, password  # what an MD5 login must match
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name=f"fake-pg-{self.port}", daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def __enter__(self) -> FakePgServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self._lock:
            sockets = [self._listener, *self._sockets]
        for sock in sockets:  # shutdown, not just close: it wakes a thread blocked in accept() or recv()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Until every client connection so far has been closed and everything it sent has been read."""
        with self._lock:
            connections = list(self.connections)
        for connection in connections:
            if not connection.closed.wait(timeout):
                raise TimeoutError("a client connection is still open")

    @property
    def transcript(self) -> bytes:
        """Every byte every client sent, in connection order."""
        with self._lock:
            return b"".join(bytes(c.received) for c in self.connections)

    # --- serving -------------------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            connection = Connection()
            with self._lock:
                self.connections.append(connection)
                self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock, connection), daemon=True).start()

    def _serve(self, sock: socket.socket, connection: Connection) -> None:
        try:
            with sock:
                self._converse(sock, connection)
                while self._read(sock, connection, 1):  # anything the client still sends, until it closes
                    pass
        except (_Closed, OSError):
            return
        finally:
            connection.closed.set()

    def _read(self, sock: socket.socket, connection: Connection, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise _Closed
            data += chunk
            with self._lock:
                connection.received += chunk
        return data

    def _message(self, sock: socket.socket, connection: Connection) -> tuple[bytes, bytes]:
        kind = self._read(sock, connection, 1)
        (length,) = struct.unpack("!I", self._read(sock, connection, 4))
        return kind, self._read(sock, connection, length - 4)

    def _converse(self, sock: socket.socket, connection: Connection) -> None:
        if self.mode == "hang":
            while self._read(sock, connection, 1):
                pass
        while True:  # untyped startup packets: SSL/GSS requests first, then the startup message
            (length,) = struct.unpack("!I", self._read(sock, connection, 4))
            body = self._read(sock, connection, length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                connection.tls_requested |= code == SSL_REQUEST
                sock.sendall(b"N")
                continue
            if code == CANCEL_REQUEST:
                return
            break
        fields = body[4:].split(b"\0")
        connection.startup = {k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2], strict=False) if k}
        user = connection.startup.get("user", "")
        refused = _error("28P01", f'password authentication failed for user "{user}"')
        if self.mode == "trust":
            connection.asked = "ok"
            self._logged_in(sock, connection)
        elif self.mode == "cleartext":
            connection.asked = "cleartext"
            sock.sendall(_auth(AUTH_CLEARTEXT))
            self._read_password(sock, connection)
            sock.sendall(refused)
        else:
            salt = secrets.token_bytes(4)
            connection.asked = "md5"
            sock.sendall(_auth(AUTH_MD5, salt))
            answer = self._read_password(sock, connection)
            if user == self._user and answer == md5_response(self._user, self._password, salt):
                self._logged_in(sock, connection)
            else:
                sock.sendall(refused)

    def _read_password(self, sock: socket.socket, connection: Connection) -> bytes:
        kind, body = self._message(sock, connection)
        if kind != b"p":
            raise _Closed
        connection.password_message = body.rstrip(b"\0")
        return connection.password_message

    def _logged_in(self, sock: socket.socket, connection: Connection) -> None:
        parameters = {
            "server_version": "15.0",
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
        }
        out = _auth(AUTH_OK)
        for name, value in parameters.items():
            out += _packet(b"S", name.encode() + b"\0" + value.encode() + b"\0")
        out += _packet(b"K", struct.pack("!II", 4242, 4343)) + _packet(b"Z", b"I")
        connection.logged_in = True  # before the client can see it logged in
        sock.sendall(out)
        while True:  # no query is served; wait for Terminate or the close
            kind, _ = self._message(sock, connection)
            if kind == b"X":
                return
            sock.sendall(_error("0A000", "the fake server serves no queries") + _packet(b"Z", b"I"))


def _packet(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _auth(code: int, extra: bytes = b"") -> bytes:
    return _packet(b"R", struct.pack("!I", code) + extra)


def _error(sqlstate: str, message: str) -> bytes:
    fields = [b"SFATAL", b"VFATAL", b"C" + sqlstate.encode(), b"M" + message.encode()]
    return _packet(b"E", b"\0".join(fields) + b"\0\0")
