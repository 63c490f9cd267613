"""Autobahn's case model: what a case expects, how one run is recorded, and the verdict rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from .client import FuzzingClient, preview

OK = "OK"
NON_STRICT = "NON-STRICT"
INFORMATIONAL = "INFORMATIONAL"
FAILED = "FAILED"
WRONG_CODE = "WRONG CODE"
UNCLEAN = "UNCLEAN"
FAILED_BY_CLIENT = "FAILED BY CLIENT"
PASSING = (OK, NON_STRICT, INFORMATIONAL)

# Events as Autobahn records them: ("message", payload, binary), ("pong", payload),
# ("timeout", tag).
Event = tuple[object, ...]


@dataclass(frozen=True)
class ExpectedClose:
    """Autobahn's ``expectedClose``: who must start the closing handshake, and how it must end."""

    closed_by_me: bool
    codes: tuple[int, ...]
    require_clean: bool
    wrong_endpoint_fatal: bool = False


@dataclass(frozen=True)
class Case:
    """One testsuite case: ``start`` is its ``onOpen``; the hooks replace Autobahn overrides."""

    id: str
    description: str
    expectation: str
    start: Callable[[CaseRun], None]
    on_message: Callable[[CaseRun, bytes, bool], None] | None = None
    conclude: Callable[[CaseRun], None] | None = None
    suppress_close: bool = False
    deadline: float = 15.0
    slow: bool = False

    @property
    def category(self) -> int:
        return int(self.id.split(".")[0])

    @property
    def sort_key(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.id.split("."))


class CaseRun:
    """One execution of a case against a server: Autobahn's ``Case`` instance."""

    def __init__(self, case: Case, url: str) -> None:
        self.case = case
        self.client = FuzzingClient(url, self)
        self.received: list[Event] = []
        self.expected: dict[str, list[Event]] = {}
        self.expected_close = ExpectedClose(closed_by_me=True, codes=(), require_clean=True)
        self.behavior = FAILED
        self.behavior_close = FAILED
        self.result = "Actual events differ from any expected."
        self.result_close = "TCP connection was dropped without close handshake"
        self.notes: list[str] = []
        self.count = 0

    def on_open(self) -> None:
        self.case.start(self)

    def on_message(self, payload: bytes, binary: bool) -> None:
        if self.case.on_message is not None:
            self.case.on_message(self, payload, binary)
            return
        self.received.append(("message", payload, binary))
        self.finish_when_done()

    def on_pong(self, payload: bytes) -> None:
        self.received.append(("pong", payload))
        self.finish_when_done()

    def on_connection_lost(self) -> None:
        self.evaluate()
        if self.case.conclude is not None:
            self.case.conclude(self)

    def finish_when_done(self) -> None:
        """Start the closing handshake once the events match every expectation (as Autobahn)."""
        if any(events != self.received for events in self.expected.values()):
            return
        if self.expected_close.closed_by_me and not self.case.suppress_close:
            self.client.send_close(self.expected_close.codes[0])

    def evaluate(self) -> None:
        """Autobahn's ``Case.onConnectionLost``."""
        for behavior, events in self.expected.items():
            if events == self.received:
                self.behavior = behavior
                self.result = "Actual events match at least one expected."
                break
        client, close = self.client, self.expected_close
        if not client.connection_was_open:
            self.behavior_close = FAILED
            self.result_close = "The WebSocket opening handshake was never completed!"
            return
        if close.closed_by_me != client.closed_by_me:
            self.behavior_close = FAILED
            self.result_close = "The connection was failed by the wrong endpoint"
        elif close.require_clean and not client.was_clean:
            self.behavior_close = UNCLEAN
            self.result_close = "The spec requires the connection to be failed cleanly here"
        elif client.remote_close_code is not None and client.remote_close_code not in close.codes:
            self.behavior_close = WRONG_CODE
            codes = ",".join(map(str, close.codes))
            self.result_close = f"The close code should have been {codes} or empty"
        elif client.dropped_by_me:
            self.behavior_close = FAILED_BY_CLIENT
            self.result_close = "It is preferred that the server close the TCP connection"
        else:
            self.behavior_close = OK
            self.result_close = "Connection was properly closed"
        if close.wrong_endpoint_fatal and close.closed_by_me != client.closed_by_me:
            self.behavior = FAILED
            self.result = "The server never failed the connection: the invalid UTF-8 went unseen."


def format_events(events: list[Event]) -> str:
    parts = []
    for event in events:
        fields = [preview(item) if isinstance(item, bytes) else repr(item) for item in event]
        parts.append(f"({', '.join(fields)})")
    return "[" + ", ".join(parts) + "]"


@dataclass
class Result:
    """The recorded outcome of one case, with everything needed to explain it."""

    case: Case
    behavior: str
    behavior_close: str
    result: str
    result_close: str
    expected: dict[str, list[Event]]
    received: list[Event]
    expected_close: ExpectedClose
    closed_by_me: bool
    failed_by_me: bool
    dropped_by_me: bool
    was_clean: bool
    was_not_clean_reason: str | None
    remote_close_code: int | None
    remote_close_reason: str | None
    violations: list[str]
    notes: list[str]
    wire_log: list[str]
    duration: float

    @classmethod
    def of(cls, run: CaseRun, duration: float) -> Result:
        client = run.client
        return cls(
            case=run.case,
            behavior=run.behavior,
            behavior_close=run.behavior_close,
            result=run.result,
            result_close=run.result_close,
            expected=run.expected,
            received=run.received,
            expected_close=run.expected_close,
            closed_by_me=client.closed_by_me,
            failed_by_me=client.failed_by_me,
            dropped_by_me=client.dropped_by_me,
            was_clean=client.was_clean,
            was_not_clean_reason=client.was_not_clean_reason,
            remote_close_code=client.remote_close_code,
            remote_close_reason=client.remote_close_reason,
            violations=client.violations,
            notes=run.notes,
            wire_log=client.wire_log(),
            duration=duration,
        )

    @property
    def outcome(self) -> str:
        """OK, NON-STRICT, INFORMATIONAL or FAILED.

        FAILED covers Autobahn's failing behaviours and every closing behaviour other than OK
        (unclean, wrong code, TCP left for the client to drop), and any frame the server sent
        that breaks RFC 6455.
        """
        if self.behavior == INFORMATIONAL:
            return INFORMATIONAL
        if self.violations or self.behavior not in PASSING:
            return FAILED
        if self.behavior_close not in (OK, INFORMATIONAL):
            return FAILED
        return self.behavior

    def explain(self) -> str:
        """A readable account: what was sent, what was expected, what came back."""
        close = self.expected_close
        expected = "; ".join(f"{name}: {format_events(ev)}" for name, ev in self.expected.items())
        lines = [
            f"Case {self.case.id}: {self.case.description}",
            f"Expectation: {self.case.expectation}",
            f"Outcome: {self.outcome} in {self.duration:.2f} s",
            f"  behaviour {self.behavior}: {self.result}",
            f"  closing   {self.behavior_close}: {self.result_close}",
            f"Expected events: {expected or '(none: the case judges them itself, or never ran)'}",
            f"Received events: {format_events(self.received)}",
            (
                f"Expected close: started by {'client' if close.closed_by_me else 'server'}, "
                f"codes {list(close.codes)} or none, clean required: {close.require_clean}"
            ),
            f"Observed close: closedByMe={self.closed_by_me} failedByMe={self.failed_by_me} "
            f"droppedByMe={self.dropped_by_me} wasClean={self.was_clean} "
            f"remote code={self.remote_close_code} reason={self.remote_close_reason!r}"
            + (f" ({self.was_not_clean_reason})" if self.was_not_clean_reason else ""),
        ]
        lines += [f"Server violation: {v}" for v in self.violations]
        lines += [f"Note: {n}" for n in self.notes]
        lines += ["Wire log:", *(f"  {line}" for line in self.wire_log)]
        return "\n".join(lines)


async def run_case(url: str, case: Case) -> Result:
    """Run ``case`` against the echo endpoint at ``url``; never waits past the case deadline."""
    started = time.monotonic()
    run = CaseRun(case, url)
    try:
        await run.client.open()
    except OSError as exc:
        run.notes.append(f"could not connect to {url}: {exc}")
        run.evaluate()
        return Result.of(run, time.monotonic() - started)
    try:
        await asyncio.wait_for(asyncio.shield(run.client.lost), case.deadline)
    except asyncio.TimeoutError:
        run.notes.append(f"connection still open after the {case.deadline:g} s harness deadline")
        run.client.abort()
        await run.client.lost
    return Result.of(run, time.monotonic() - started)
