"""A stand-in for systemd's end of the sd_notify protocol: a datagram socket that records messages."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Message:
    received_at: float  # time.monotonic()
    fields: dict[str, str]


@dataclass
class NotifySocket:
    """Listens where $NOTIFY_SOCKET points; `address` is what goes into the environment."""

    address: str
    sock: socket.socket
    messages: list[Message] = field(default_factory=list)

    @classmethod
    def bind_path(cls, path: Path) -> NotifySocket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        return cls(str(path), sock)

    @classmethod
    def bind_abstract(cls, name: str) -> NotifySocket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + name)
        return cls("@" + name, sock)

    def receive(self, timeout: float) -> Message | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        message = Message(time.monotonic(), fields)
        self.messages.append(message)
        return message

    def collect(self, seconds: float) -> list[Message]:
        """Everything that arrives within the next `seconds`."""
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                got.append(message)
        return got

    def wait_for(self, key: str, timeout: float, value: str | None = None) -> Message | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message and key in message.fields and (value is None or message.fields[key] == value):
                return message
        return None

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass
