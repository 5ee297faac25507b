"""The few system calls the sandbox makes itself, through ctypes and ioctl (Python 3.11 has no os.unshare, and
iproute2's `ip` or util-linux's `mount` may be absent where the kernel allows what they do): bring loopback up,
make the mount tree private, bind a file over another, die with the parent. And why a user namespace cannot be
made, read from the sysctls that forbid it."""
from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from typing import List, Optional

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = "16sH22x"          # struct ifreq on Linux: the interface name, then ifr_flags at the start of a 24-byte union

_libc: Optional[ctypes.CDLL] = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def loopback_up() -> None:
    """`ip link set lo up`: a new network namespace starts with loopback down (127.0.0.0/8 is routed once it is up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(IFREQ, b"lo", 0)
        flags = struct.unpack(IFREQ, fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))


def make_mounts_private() -> None:
    """`mount --make-rprivate /`: the binds that follow must not propagate to the mount namespace we came from."""
    _check(_c().mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making the mounts private")


def bind_over(source: str, target: str) -> None:
    """`mount --bind source target`: ``target`` shows ``source``'s content in this mount namespace only."""
    _check(_c().mount(source.encode(), target.encode(), None, MS_BIND, None), f"binding {source} over {target}")


def die_with_parent(signal_number: int) -> None:
    """Have the kernel send ``signal_number`` when the parent (strictly: the thread that forked us) exits."""
    _check(_c().prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


# ---- why unprivileged user namespaces are refused ----------------------------------------------------------------
def _sysctl(name: str) -> Optional[str]:
    try:
        with open("/proc/sys/" + name.replace(".", "/"), encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def userns_refusal_causes() -> List[str]:
    """The settings on this machine that forbid a user namespace to an unprivileged user, each with its fix."""
    causes = []
    if _sysctl("kernel.unprivileged_userns_clone") == "0":
        causes.append("sysctl kernel.unprivileged_userns_clone is 0 (Debian/Arch switch; as root: "
                      "sysctl -w kernel.unprivileged_userns_clone=1)")
    for name in ("user.max_user_namespaces", "user.max_net_namespaces", "user.max_mnt_namespaces"):
        if _sysctl(name) == "0":
            causes.append(f"sysctl {name} is 0 (as root: sysctl -w {name}=15000)")
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        causes.append("sysctl kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu 23.10+: the namespace is "
                      "made without capabilities; as root: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, "
                      "or an AppArmor profile with `userns,` for this Python)")
    return causes
