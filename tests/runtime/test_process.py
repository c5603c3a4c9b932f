"""The service processes' skeleton: the loop, its setup and teardown, its ends."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import ClassVar

from datamill.runtime.process import ServiceProcess
from datamill.services.runtime import Runtime


class Counting(ServiceProcess):
    role: ClassVar[str] = "counting"

    def __init__(self, runtime: Runtime, stop_after: int) -> None:
        super().__init__(runtime, "tester", threading.Event())
        self.stop_after = stop_after
        self.cycles = 0
        self.events: list[str] = []

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        self.events.append("enter")
        try:
            yield
        finally:
            self.events.append("leave")

    def cycle(self) -> None:
        self.cycles += 1
        if self.cycles == self.stop_after:
            self.stop()


def test_the_loop_cycles_until_stopped(runtime: Runtime) -> None:
    loop = Counting(runtime, stop_after=3)
    loop.run_forever()
    assert loop.cycles == 3
    assert loop.events == ["enter", "leave"]


def test_the_loop_ends_with_its_parent(runtime: Runtime) -> None:
    loop = Counting(runtime, stop_after=3)
    loop.run_forever(parent=-1)  # no process has that pid: the parent is gone
    assert loop.cycles == 0
    assert loop.events == ["enter", "leave"]
