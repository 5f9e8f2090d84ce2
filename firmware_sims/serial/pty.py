"""A pseudo-terminal standing in for a USB serial adapter: the simulator writes, the agent reads.

The agent opens a stable symlink (as udev's /dev/serial/by-id links are stable) that points at the
slave end of `os.openpty()`. Unplugging closes the master, so the agent's next read fails, and
removes the link; replugging makes a new pair and points the link at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self


class PtyPort:
    """One simulated serial port; thread-safe, so writes can run in a worker thread."""

    def __init__(self, link_path: Path, write_timeout_s: float = 1.0) -> None:
        self.link_path = link_path
        self.write_timeout_s = write_timeout_s
        self.bytes_written = 0
        self.bytes_dropped = 0
        self.plug_count = 0
        self._master: int | None = None
        self._slave_name = ""
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """What the agent opens."""
        return self.link_path

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def __enter__(self) -> Self:
        self.plug()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unplug()

    def plug(self) -> None:
        """Create a new pty pair and point the link at its slave; a no-op if plugged."""
        with self._lock:
            if self._master is not None:
                return
            master, slave = os.openpty()
            try:
                # Raw before anyone reads: a cooked tty would translate CR and eat control bytes.
                tty.setraw(slave)
                slave_name = os.ttyname(slave)
            finally:
                # The agent is the only reader; the pair lives as long as the master is open.
                os.close(slave)
            os.set_blocking(master, False)
            # Per process: a `pair` command powers its own simulated ward in the agent's state
            # dir, and two processes must never race on one staging name.
            staging = self.link_path.with_name(f"{self.link_path.name}.{os.getpid()}.new")
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
            staging.symlink_to(slave_name)
            staging.replace(self.link_path)
            self._slave_name = slave_name
            self._master = master
            self.plug_count += 1

    def unplug(self) -> None:
        """Close the master (the agent's reads fail) and remove the link; a no-op if unplugged."""
        with self._lock:
            if self._master is None:
                return
            os.close(self._master)
            self._master = None
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    def replug(self) -> None:
        """Unplug if needed, then plug a fresh pair at the same link path."""
        self.unplug()
        self.plug()

    def unread_bytes(self) -> int:
        """Bytes written and not yet read by the other end (0 when unplugged).

        Asked through a second descriptor on the slave side (FIONREAD, tty_ioctl(4)), which
        counts the line discipline's input queue without taking anything from it.
        """
        with self._lock:
            if self._master is None:
                return 0
            # By the tty's own name, not the link: another process may have moved the link.
            probe = os.open(self._slave_name, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            answer = fcntl.ioctl(probe, termios.FIONREAD, b"\0\0\0\0")
        finally:
            os.close(probe)
        return int.from_bytes(answer, sys.byteorder, signed=True)

    def write(self, data: bytes) -> int:
        """Write what the line can take within `write_timeout_s`; return the bytes written.

        Like a UART without flow control, what cannot be sent is dropped and counted: while
        unplugged, or when the reader stops reading and the pty buffer stays full.
        """
        with self._lock:
            master = self._master
            if master is None:
                self.bytes_dropped += len(data)
                return 0
            view = memoryview(data)
            written = 0
            while written < len(view):
                try:
                    written += os.write(master, view[written:])
                except BlockingIOError:
                    _, ready, _ = select.select([], [master], [], self.write_timeout_s)
                    if not ready:
                        break
                except OSError:
                    break
            self.bytes_written += written
            self.bytes_dropped += len(data) - written
            return written


@dataclass(slots=True, frozen=True)
class Sent:
    """One unit (frame or line) a simulated device put on the wire."""

    data: bytes
    record: object
    intact: bool


class SerialDevice(Protocol):
    """What `stream` drives: a device that produces its next frame or line on demand."""

    def next_unit(self, *, corrupt: bool = False) -> Sent:
        """The next frame or line; `corrupt` breaks its integrity check on purpose."""
        ...

    def garbage(self) -> bytes:
        """Line noise of the kind this link suffers."""
        ...


async def stream(
    device: SerialDevice,
    port: PtyPort,
    stop: asyncio.Event,
    *,
    interval_s: float,
    corrupt_every: int = 0,
    garbage_every: int = 0,
    on_sent: Callable[[Sent], None] | None = None,
) -> None:
    """Write the device's output to `port` every `interval_s` until `stop` is set.

    Every `corrupt_every`-th unit is sent with a broken checksum, and line noise follows every
    `garbage_every`-th unit (0 disables either). `on_sent` hears of each unit that went out
    whole; a ledger of produced readings should record those whose `intact` is true.
    """
    count = 0
    while not stop.is_set():
        count += 1
        corrupt = corrupt_every > 0 and count % corrupt_every == 0
        sent = device.next_unit(corrupt=corrupt)
        written = await asyncio.to_thread(port.write, sent.data)
        if on_sent is not None and written == len(sent.data):
            on_sent(sent)
        if garbage_every > 0 and count % garbage_every == 0:
            await asyncio.to_thread(port.write, device.garbage())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
