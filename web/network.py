"""The device's own names and addresses: which Host headers the page answers to, and which
clients reach it over the USB cable.

DNS rebinding: a web page on another site can point its own name at this device's address and
then read the answers, because the browser thinks it talks to that site. The request still
carries the attacker's name in its Host header, so the page answers only to the device's names
(hostname, hostname.local, localhost), its current IP addresses and names the operator adds
(`blurcam web --allow-host`, e.g. a TLS proxy's). Addresses are read again every few seconds
(DHCP, the USB link coming up).

The USB link is the NCM network interface the gadget adds next to the camera; the kernel names
gadget Ethernet interfaces usb0, usb1, ... A client there is the computer the camera is plugged
into: its owner.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import psutil

REFRESH_S = 5.0
USB_LINK_PREFIX = "usb"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def interface_networks() -> dict[str, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    """Each network interface's IP addresses with their prefixes, e.g. {'eth0': [192.168.1.5/24]}."""
    out: dict[str, list] = {}
    for name, addrs in psutil.net_if_addrs().items():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = addr.address.split("%", 1)[0]  # fe80::1%eth0: the zone is the interface itself
            try:
                out.setdefault(name, []).append(ipaddress.ip_interface(f"{ip}/{addr.netmask or ''}".rstrip("/")))
            except ValueError:
                continue
    return out


def host_of(value: str) -> str:
    """The host part of a Host header or an Origin's netloc: lower case, no port, no brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class DeviceNetwork:
    """What this device is called and where it is, refreshed every REFRESH_S seconds."""

    def __init__(self, extra_names: Iterable[str] = (),
                 hostname: Callable[[], str] = socket.gethostname,
                 networks: Callable[[], dict[str, list]] = interface_networks):
        self.extra_names = {host_of(n) for n in extra_names}
        self._hostname, self._networks = hostname, networks
        self._lock = threading.Lock()
        self._read_at = -REFRESH_S
        self._names: set[str] = set()
        self._usb_link: list[IPNetwork] = []

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < REFRESH_S:
                return
            host = self._hostname().lower().rstrip(".")
            short = host.split(".", 1)[0]
            names = {host, short, f"{short}.local", *LOOPBACK_NAMES, *self.extra_names}
            usb_link: list[IPNetwork] = []
            for ifname, addrs in self._networks().items():
                names.update(str(a.ip) for a in addrs)
                if ifname.startswith(USB_LINK_PREFIX):
                    usb_link.extend(a.network for a in addrs)
            self._names, self._usb_link = names, usb_link
            self._read_at = time.monotonic()

    def names(self) -> set[str]:
        """Every host name and address (as text) this device answers to."""
        self._refresh()
        return self._names

    def is_own_host(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        host = host_of(host_header)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names()
        return ip.is_loopback or str(ip) in self.names()  # one spelling per address (::1, not 0::1)

    def is_local_link(self, client: str | None) -> bool:
        """True for a client on this machine or at the other end of the USB cable."""
        try:
            ip = ipaddress.ip_address((client or "").split("%", 1)[0])
        except ValueError:
            return False
        if ip.is_loopback:
            return True
        self._refresh()
        return any(ip in net for net in self._usb_link)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether an Origin header names the site the request was sent to (scheme aside: a TLS proxy
    in front of the page changes it)."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and \
        parts.netloc.lower() == host_header.strip().lower()
