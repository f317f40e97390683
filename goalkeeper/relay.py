"""Telling a relay that refuses everyone from addresses that are really wrong.

A 550 for one recipient says that address is bad; a 550 for every recipient says the relay is
(misconfigured, restarting, blocking us). From the permanent refusals a channel sees in a row,
this decides which it is: RELAY_OUTAGE_AFTER distinct recipients refused with the same code
make an outage, which lasts until something is delivered. Pure: no I/O, no clock, no sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RELAY_OUTAGE_AFTER = 3


@dataclass
class RefusalStreak:
    """The permanent refusals of one channel since its last delivery or other failure."""

    after: int = RELAY_OUTAGE_AFTER
    down_code: int | None = None  # the code the relay refuses everyone with, during an outage
    outages: int = 0  # outages in a row (for the backoff), until the next delivery
    _refused: list[tuple[int, str]] = field(default_factory=list)  # (message id, recipient)
    _code: int | None = None

    def delivered(self) -> None:
        """A message went through: the relay works, whatever came before."""
        self._refused.clear()
        self.down_code, self.outages = None, 0

    def broken(self) -> None:
        """Something other than a permanent refusal: refusals after this start a new streak."""
        self._refused.clear()

    def holds(self, code: int | None) -> bool:
        """Whether a refusal with `code` is the ongoing outage, not news about the address."""
        return code is not None and code == self.down_code

    def refused(self, message_id: int, recipient: str, code: int | None) -> list[int]:
        """Count a refusal; the ids of the streak when it has become an outage, else []."""
        if code is None or code != self._code:
            self._refused.clear()
            self._code = code
        if code is None:
            return []
        if all(seen != recipient for _, seen in self._refused):
            self._refused.append((message_id, recipient))
        if len(self._refused) < self.after:
            return []
        ids = [message_id for message_id, _ in self._refused]
        self._refused.clear()
        self.down_code = code
        return ids

    def outage_started(self) -> int:
        """Note one more outage in a row; how many came before it (the backoff's exponent)."""
        self.outages += 1
        return self.outages - 1
