"""Who owns a journal entry, as the kernel knows it: a process's identity and whether it is gone.

A pid alone names a process only on one kernel, in one pid namespace, and only until it is
reused. ``process_identity`` pins it down (``BOOT/PIDNS/START``: the boot id, the pid
namespace, the process's start time), so that ``reap`` run on the owner's own machine can tell,
at once and without waiting for the lease, that an owner is dead (``owner_gone``).
"""

from __future__ import annotations

import os

__all__ = ["owner_gone", "owner_on_this_machine", "process_identity"]


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return None


def _machine() -> str | None:
    """This kernel's boot and this process's pid namespace: where a pid means one process."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return None if boot is None else f"{boot.strip()}/{namespace}"


def _started(pid: int) -> str | None:
    """The start time of *pid* (clock ticks since boot), or ``None`` if it is gone (a zombie
    is gone: it runs no code, and only waits for its parent to read its status)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "(comm)", which may hold spaces
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22 of proc(5): starttime


def process_identity(pid: int) -> str | None:
    """``BOOT/PIDNS/START`` for the live process *pid* of this machine, or ``None`` (not Linux,
    no /proc, or no such process)."""
    machine, started = _machine(), _started(pid)
    if machine is None or started is None:
        return None
    return f"{machine}/{started}"


def owner_on_this_machine(process: str | None) -> bool:
    """Whether an owner's *process* identity names this kernel and pid namespace (so its pid
    can be checked here)."""
    machine = _machine()
    return process is not None and machine is not None and process.rpartition("/")[0] == machine


def owner_gone(process: str | None, pid: int) -> bool:
    """Whether the owner whose identity is *process* is known dead, now: it ran in this kernel
    and pid namespace, and *pid* no longer exists or is another process (its start time
    differs: the pid was reused). ``False`` whenever this cannot be told from here."""
    if not owner_on_this_machine(process):
        return False
    assert process is not None
    return _started(pid) != process.rpartition("/")[2]
