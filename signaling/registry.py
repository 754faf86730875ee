"""Who is registered under which username: the interface and the in-memory registry.

The state machine (``signaling/videocall.py``) decides *whether* a handle may register;
the registry alone knows who holds which name, and makes a claim atomic across
everything that shares it. ``MemoryRegistry`` serves one signalling process; a registry
shared by several nodes implements the same ``Registry`` protocol. A claim is one step,
never read-then-write, so two handles racing for a name cannot both win.

An owner is an opaque string naming the node and the handle (``"<node>/<handle>"``),
so a shared registry can tell which node holds a name.

A registry that cannot be reached raises ``RegistryUnavailable`` from ``claim``, ``lookup``
and ``names``: the plugin runner tells the client to try again, and nothing else changes.
"""

from __future__ import annotations

from typing import Protocol


class RegistryUnavailable(Exception):
    """The shared registry does not answer (a network or server outage): the request
    cannot be decided now, and may succeed if tried again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Registry(Protocol):
    """What the plugin runner needs from a username registry. All methods are async
    so that a networked implementation fits behind the same interface."""

    async def start(self) -> None:
        """Begin what runs in the background (a lease renewer); the server is starting."""
        ...

    async def claim(self, name: str, owner: str) -> bool:
        """Take ``name`` for ``owner`` if nobody holds it; True when taken (or already ours)."""
        ...

    async def release(self, name: str, owner: str) -> None:
        """Give ``name`` back, only if ``owner`` holds it. Never raises for an outage: a
        shared registry lets the name expire instead."""
        ...

    async def lookup(self, name: str) -> str | None:
        """The owner of ``name``, or None."""
        ...

    async def names(self) -> list[str]:
        """Every registered name."""
        ...

    async def close(self) -> None:
        """Stop what ``start`` began, let go of connections (the server is stopping)."""
        ...

    async def ready(self) -> bool:
        """Whether claims can be served now (``/readyz``): a networked registry checks that its
        store answers; it must not raise, and should answer within a second or two."""
        ...


class MemoryRegistry:
    """The registry of a single signalling node: a dict, atomic because asyncio is
    single-threaded and no method awaits between reading and writing."""

    #: No method ever waits: a plugin step that needs only this registry ends in the step
    #: that started it (``PluginRunner`` then runs it without a task of its own).
    immediate = True

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    async def start(self) -> None:
        pass

    async def claim(self, name: str, owner: str) -> bool:
        current = self._owners.setdefault(name, owner)
        return current == owner

    async def release(self, name: str, owner: str) -> None:
        if self._owners.get(name) == owner:
            del self._owners[name]

    async def lookup(self, name: str) -> str | None:
        return self._owners.get(name)

    async def names(self) -> list[str]:
        return sorted(self._owners)

    async def close(self) -> None:
        self._owners.clear()

    async def ready(self) -> bool:
        return True  # a dict in this process is there while the process is


def owner_id(node_id: str, handle: int) -> str:
    return f"{node_id}/{handle}"


def parse_owner(owner: str) -> tuple[str, int] | None:
    """``"<node>/<handle>"`` -> (node, handle); None for anything else."""
    node, sep, handle = owner.rpartition("/")
    if not sep or not handle.isdigit():
        return None
    return node, int(handle)
