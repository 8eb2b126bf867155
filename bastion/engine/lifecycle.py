"""Component lifecycle: a small state machine so start/stop happen once and in order."""

from __future__ import annotations

import enum


class ComponentState(enum.StrEnum):
    READY = "ready"
    RUNNING = "running"
    STOPPED = "stopped"
    FAULTED = "faulted"


_ALLOWED = {
    ComponentState.READY: {ComponentState.RUNNING, ComponentState.FAULTED},
    ComponentState.RUNNING: {ComponentState.STOPPED, ComponentState.FAULTED},
    ComponentState.STOPPED: set(),
    ComponentState.FAULTED: {ComponentState.STOPPED},
}


class InvalidTransition(RuntimeError):
    pass


class Lifecycle:
    __slots__ = ("name", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = ComponentState.READY

    def move(self, to: ComponentState) -> None:
        if to not in _ALLOWED[self.state]:
            raise InvalidTransition(f"{self.name}: cannot go from {self.state} to {to}")
        self.state = to
