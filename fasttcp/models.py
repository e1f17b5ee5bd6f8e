"""State models: flag classification and transition tables compiled from readable rules.

A model is a dense ``uint8`` table ``table[state, direction, flag_class]`` giving the next state,
or ``INVALID`` (state unchanged, segment reported invalid) or ``IGNORE`` (state unchanged,
segment reported ignored), plus a same-shaped ``actions`` table and per-state timeouts. State 0
is the state of a connection before its first segment; a segment that matches no connection is
looked up in row ``(0, orig)`` and creates a connection only if that cell names a state.

Tables are written as text, one row per (direction, flag class), one column per state, in the
style of Linux ``nf_conntrack_proto_tcp.c``: short aliases keep the columns aligned and comment
lines under a row give the reasons. A cell may carry a marker:

``*`` (reopen)
    the connection ends here and this segment opens a new one under the same key, its sender
    becoming the originator (netfilter kills the old entry and re-evaluates the packet).
``~`` (close unless replied)
    after the transition the connection is removed if the responder has not yet sent a segment
    the model accepted (netfilter drops an entry whose only reply is a RST).
``^`` (flip; in row 0 only)
    the connection is created with the *receiver* of this segment as originator, as Zeek does
    when the first segment seen is a SYN-ACK. The cell's state is then read with the roles
    swapped (originator first).
``+`` (pickup; in row 0 only)
    the connection is created flagged as picked up mid-stream (no handshake seen).

Segments of the model's illegal flag classes are also counted, globally per class and per
connection.

Example
-------
>>> from fasttcp.models import get_model
>>> m = get_model("conntrack")
>>> m.next_state("SYN_SENT", "resp", "SYNACK")
('SYN_RECV', '')
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import numpy as np

from fasttcp._engine import (
    ACTION_CLOSE_UNREPLIED,
    ACTION_FLIP,
    ACTION_NONE,
    ACTION_PICKUP,
    ACTION_REOPEN,
    IGNORE,
    INVALID,
    TH_ACK,
    TH_CWR,
    TH_ECE,
    TH_FIN,
    TH_PUSH,
    TH_RST,
    TH_SYN,
    TH_URG,
)

__all__ = [
    "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR",
    "FLAG_CLASSES", "DIRECTIONS", "Model", "classify_flags", "compile_model", "conntrack",
    "get_model", "MODELS",
]

# TCP header flag bits, as the engine defines them.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = (TH_FIN, TH_SYN, TH_RST, TH_PUSH, TH_ACK, TH_URG,
                                          TH_ECE, TH_CWR)

# The first five are the combinations a TCP stack sends; the rest are what scanners and broken
# stacks send. Order matters only for the codes.
FLAG_CLASSES = ("SYN", "SYNACK", "FIN", "ACK", "RST",
                "SYNFIN", "SYNRST", "FIN_NOACK", "NULL", "XMAS", "OTHER",
                "ACK_EARLY", "FIN_EARLY")
ILLEGAL_CLASSES = FLAG_CLASSES[5:11]
# With sequence numbers, an ACK or FIN-ACK whose ack does not yet cover the peer's FIN takes
# its "early" class (no flags byte maps to one): that is what tells FIN_WAIT_1 from FIN_WAIT_2
# and a simultaneous close (CLOSING) from an ordinary one. A model that does not say otherwise
# treats each like its base class.
EARLY_CLASSES = {"ACK": "ACK_EARLY", "FIN": "FIN_EARLY"}
_BASE_OF = {early: base for base, early in EARLY_CLASSES.items()}
DIRECTIONS = ("orig", "resp")

# Combinations of FIN SYN RST ACK URG that Linux accepts (tcp_valid_flags in
# nf_conntrack_proto_tcp.c); it ignores PSH, ECE and CWR when checking.
_LEGAL = frozenset({SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG,
                    ACK, ACK | URG})


def classify_flags(flags: int) -> str:
    """Flag class of one TCP flags byte.

    Legal combinations go by Linux's precedence (RST, then SYN, then FIN, then ACK); illegal
    ones are named for the scan or error they usually are.

    >>> classify_flags(SYN | ACK), classify_flags(FIN | PSH | URG), classify_flags(0)
    ('SYNACK', 'XMAS', 'NULL')
    """
    if not 0 <= flags <= 255:
        raise ValueError(f"a TCP flags byte is in 0..255, not {flags}")
    core = flags & ~(PSH | ECE | CWR)
    if core in _LEGAL:
        if core & RST:
            return "RST"
        if core & SYN:
            return "SYNACK" if core & ACK else "SYN"
        return "FIN" if core & FIN else "ACK"
    if flags & (FIN | SYN | RST | PSH | ACK | URG) == 0:
        return "NULL"
    if flags & (FIN | PSH | URG) == FIN | PSH | URG and not flags & (SYN | RST | ACK):
        return "XMAS"
    if flags & (SYN | RST) == SYN | RST:
        return "SYNRST"
    if flags & (SYN | FIN) == SYN | FIN:
        return "SYNFIN"
    if flags & FIN and not flags & (SYN | RST | ACK):
        return "FIN_NOACK"
    return "OTHER"


_MARKERS = {"": ACTION_NONE, "*": ACTION_REOPEN, "~": ACTION_CLOSE_UNREPLIED, "^": ACTION_FLIP,
            "+": ACTION_PICKUP}
_ACTION_NAMES = {ACTION_NONE: "", ACTION_REOPEN: "reopen", ACTION_CLOSE_UNREPLIED: "close_unreplied",
                 ACTION_FLIP: "flip", ACTION_PICKUP: "pickup"}


@dataclass(frozen=True, eq=False)
class Model:
    """A compiled state model (see the module docstring).

    Attributes
    ----------
    name : str
    states : tuple of str
        State names by code; code 0 is the state before the first segment.
    flag_classes : tuple of str
    class_of : ndarray, shape (256,), uint8
        Flag class code of every flags byte.
    table : ndarray, shape (n_states, 2, n_classes), uint8
        Next state code, INVALID or IGNORE.
    actions : ndarray, shape (n_states, 2, n_classes), uint8
        ACTION_* code of each cell.
    timeouts : mapping of state name to seconds
        Idle time after which a connection in that state is expired.
    illegal_classes : tuple of str
        Flag classes counted as illegal (scans, broken stacks), per connection and globally.
    endpoint_states : tuple of str
        For models whose states are pairs of endpoint states (rfc793): the endpoint states.
    pairs : ndarray, shape (n_states, 2), uint8, optional
        For such models: the (originator, responder) endpoint state codes of each state.
    endpoint_timeouts : mapping of endpoint state name to seconds
        For such models: a state's timeout is the larger of its endpoints'.
    """

    name: str
    states: tuple
    flag_classes: tuple
    class_of: np.ndarray
    table: np.ndarray
    actions: np.ndarray
    timeouts: Mapping[str, float] = field(default_factory=dict)
    illegal_classes: tuple = ()
    endpoint_states: tuple = ()
    pairs: np.ndarray | None = None
    endpoint_timeouts: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_states, n_classes = len(self.states), len(self.flag_classes)
        if not 1 <= n_states < IGNORE:
            raise ValueError(f"a model has 1 to {IGNORE - 1} states, not {n_states}")
        if len(set(self.states)) != n_states or len(set(self.flag_classes)) != n_classes:
            raise ValueError("state and flag class names must be unique")
        checks = [("class_of", self.class_of, (256,), n_classes),
                  ("table", self.table, (n_states, 2, n_classes), None),
                  ("actions", self.actions, (n_states, 2, n_classes), len(_ACTION_NAMES))]
        for what, arr, shape, bound in checks:
            if arr.dtype != np.uint8 or arr.shape != shape:
                raise ValueError(f"{what} must be uint8 of shape {shape}, "
                                 f"not {arr.dtype} {arr.shape}")
            if bound is not None and arr.size and arr.max() >= bound:
                raise ValueError(f"{what} holds a code >= {bound}")
        bad = (self.table >= n_states) & (self.table != INVALID) & (self.table != IGNORE)
        if bad.any():
            raise ValueError(f"table cells {np.argwhere(bad).tolist()} name no state")
        unknown = set(self.timeouts) - set(self.states)
        if unknown:
            raise ValueError(f"timeouts for unknown states {sorted(unknown)}")
        unknown = set(self.illegal_classes) - set(self.flag_classes)
        if unknown:
            raise ValueError(f"illegal classes {sorted(unknown)} are not flag classes")
        if self.pairs is not None:
            n_endpoint = len(self.endpoint_states)
            if self.pairs.shape != (n_states, 2) or self.pairs.max() >= n_endpoint:
                raise ValueError(f"pairs must be ({n_states}, 2) endpoint state codes "
                                 f"below {n_endpoint}")
            self.pairs.flags.writeable = False
        for arr in (self.class_of, self.table, self.actions):
            arr.flags.writeable = False
        object.__setattr__(self, "timeouts", MappingProxyType(dict(self.timeouts)))
        object.__setattr__(self, "endpoint_timeouts",
                           MappingProxyType(dict(self.endpoint_timeouts)))

    @property
    def early(self) -> np.ndarray:
        """uint8 per flag class: the class a segment of it takes when its ack does not yet
        cover the peer's FIN (EARLY_CLASSES), itself for the others."""
        codes = np.arange(len(self.flag_classes), dtype=np.uint8)
        for base, early in EARLY_CLASSES.items():
            if base in self.flag_classes and early in self.flag_classes:
                codes[self.flag_classes.index(base)] = self.flag_classes.index(early)
        return codes

    @property
    def illegal_mask(self) -> np.ndarray:
        """uint8 per flag class: 1 where the class is counted as illegal."""
        return np.array([c in self.illegal_classes for c in self.flag_classes], dtype=np.uint8)

    def state_code(self, name: str) -> int:
        """Code of state `name`."""
        try:
            return self.states.index(name)
        except ValueError:
            raise KeyError(f"model {self.name!r} has no state {name!r}") from None

    def next_state(self, state: str, direction: str, flag_class: str) -> tuple[str, str]:
        """(result, action) of one cell by names; result is a state, 'invalid' or 'ignore'.

        >>> get_model("conntrack").next_state("ESTABLISHED", "orig", "RST")
        ('CLOSE', 'close_unreplied')
        """
        cell = (self.state_code(state), DIRECTIONS.index(direction),
                self.flag_classes.index(flag_class))
        result = int(self.table[cell])
        name = {INVALID: "invalid", IGNORE: "ignore"}.get(result)
        return (name or self.states[result], _ACTION_NAMES[int(self.actions[cell])])


def compile_model(
    name: str,
    states: Sequence[str],
    aliases: Mapping[str, str],
    rows: str,
    *,
    flag_classes: Sequence[str] = FLAG_CLASSES,
    classify: Callable[[int], str] = classify_flags,
    timeouts: Mapping[str, float] | None = None,
    illegal: Sequence[str] | None = None,
    default: str | None = None,
) -> Model:
    """Compiles a text transition table into a `Model`.

    Parameters
    ----------
    name : str
    states : sequence of str
        State names; the first is the state before the first segment.
    aliases : mapping of str to str
        Short cell names to state names, or to ``"invalid"`` / ``"ignore"``.
    rows : str
        Lines ``DIRECTION CLASSES CELL...``: DIRECTION is ``orig``, ``resp`` or ``*`` (both);
        CLASSES one flag class or several joined by ``|``; then one cell per state in order, or a
        single cell for all states. Cells are aliases, a state's optionally followed by a
        marker (``*``, ``~``, ``^``, ``+``: see the module docstring).
        ``#`` starts a comment. Every (direction, class) pair must be given exactly once;
        ACK_EARLY and FIN_EARLY, when not given, copy the ACK and FIN rows.
    flag_classes : sequence of str
    classify : callable
        Maps a flags byte (0..255) to one of `flag_classes`.
    timeouts : mapping of state name to seconds, optional
    illegal : sequence of str, optional
        Flag classes counted as illegal; by default the scan classes of FLAG_CLASSES when the
        default classes are used, else none.
    default : str, optional
        A cell (alias and marker) for every (direction, class) pair no row gives; without it
        the table must be complete.

    Raises
    ------
    ValueError
        On an unknown alias, state or class, a row of the wrong width, a pair given twice, or
        an incomplete table (the message lists the missing pairs).

    Examples
    --------
    >>> m = compile_model("tiny", ["NEW", "OPEN"], {"o": "OPEN", "iv": "invalid"},
    ...                   '''* ACK|SYN|SYNACK|FIN o o
    ...                      * RST|SYNFIN|SYNRST|FIN_NOACK|NULL|XMAS|OTHER iv''')
    >>> m.next_state("NEW", "orig", "SYN")
    ('OPEN', '')
    """
    states, flag_classes = tuple(states), tuple(flag_classes)
    codes = _result_codes(states)
    alias_codes = {}
    for alias, target in aliases.items():
        if target not in codes:
            raise ValueError(f"alias {alias!r} names unknown state {target!r}")
        alias_codes[alias] = codes[target]

    table = np.zeros((len(states), 2, len(flag_classes)), dtype=np.uint8)
    actions = np.zeros_like(table)
    given: dict[tuple[int, int], int] = {}
    for lineno, raw in enumerate(rows.splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        if len(line) < 3:
            raise ValueError(f"row {lineno}: expected DIRECTION CLASSES CELLS, got {raw.strip()!r}")
        direction, classes, cells = line[0], line[1].split("|"), line[2:]
        if direction not in ("orig", "resp", "*"):
            raise ValueError(f"row {lineno}: direction must be orig, resp or *, not {direction!r}")
        if len(cells) == 1:
            cells = cells * len(states)
        if len(cells) != len(states):
            raise ValueError(f"row {lineno}: {len(cells)} cells for {len(states)} states")
        parsed = [_parse_cell(cell, alias_codes, f"row {lineno}") for cell in cells]
        dirs = (0, 1) if direction == "*" else (DIRECTIONS.index(direction),)
        for cls_name in classes:
            if cls_name not in flag_classes:
                raise ValueError(f"row {lineno}: unknown flag class {cls_name!r}")
            cls = flag_classes.index(cls_name)
            for d in dirs:
                if (d, cls) in given:
                    raise ValueError(f"row {lineno}: ({DIRECTIONS[d]}, {cls_name}) already "
                                     f"given on row {given[d, cls]}")
                given[d, cls] = lineno
                table[:, d, cls] = [code for code, _ in parsed]
                actions[:, d, cls] = [act for _, act in parsed]
    for base, early in EARLY_CLASSES.items():    # unless given, an early class is its base
        if base in flag_classes and early in flag_classes:
            b, e = flag_classes.index(base), flag_classes.index(early)
            for d in (0, 1):
                if (d, e) not in given and (d, b) in given:
                    table[:, d, e], actions[:, d, e] = table[:, d, b], actions[:, d, b]
                    given[d, e] = given[d, b]
    missing = [(d, i) for d in (0, 1) for i in range(len(flag_classes)) if (d, i) not in given]
    if default is not None:
        code, act = _parse_cell(default, alias_codes, "default")
    if missing:
        if default is None:
            names = ", ".join(f"({DIRECTIONS[d]}, {flag_classes[i]})" for d, i in missing)
            raise ValueError(f"model {name!r} is incomplete: no row for {names}")
        for d, i in missing:
            table[:, d, i] = code
            actions[:, d, i] = act
    return _finish_model(name, states, flag_classes, classify, table, actions, timeouts,
                         illegal)


def _parse_cell(cell: str, alias_codes: Mapping[str, int], where: str) -> tuple[int, int]:
    """(result code, action code) of one cell such as ``sSS*``."""
    m = re.fullmatch(r"(\w+)([*~^+]?)", cell)
    if not m or m.group(1) not in alias_codes:
        raise ValueError(f"{where}: unknown cell {cell!r}")
    code, action = alias_codes[m.group(1)], _MARKERS[m.group(2)]
    if action != ACTION_NONE and code in (INVALID, IGNORE):
        raise ValueError(f"{where}: marker on {cell!r}, which leaves the state as it is")
    return code, action


def tabulate_model(
    name: str,
    states: Sequence[str],
    rule: Callable[[str, str, str], tuple[str, str]],
    *,
    flag_classes: Sequence[str] = FLAG_CLASSES,
    classify: Callable[[int], str] = classify_flags,
    timeouts: Mapping[str, float] | None = None,
    illegal: Sequence[str] | None = None,
    endpoint_states: Sequence[str] = (),
    pairs: np.ndarray | None = None,
    endpoint_timeouts: Mapping[str, float] | None = None,
    refines_acks: bool = False,
) -> Model:
    """Builds a `Model` by asking `rule(state, direction, flag_class)` for every cell.

    Unless `refines_acks`, the rule is asked about ACK and FIN for the early classes too
    (EARLY_CLASSES), as if sequence numbers were not known.

    `rule` returns (result, action): result a state name, ``"invalid"`` or ``"ignore"``;
    action ``""``, ``"reopen"``, ``"close_unreplied"``, ``"flip"`` or ``"pickup"``. Suited to
    models too large to write as a text table (rfc793 has 121 states); the table is complete by
    construction and every answer is checked.

    >>> m = tabulate_model("echo", ["IDLE", "SEEN"],
    ...                    lambda state, direction, cls: ("SEEN", ""))
    >>> m.next_state("IDLE", "resp", "RST")
    ('SEEN', '')
    """
    states, flag_classes = tuple(states), tuple(flag_classes)
    codes = _result_codes(states)
    action_codes = {v: k for k, v in _ACTION_NAMES.items()}
    table = np.zeros((len(states), 2, len(flag_classes)), dtype=np.uint8)
    actions = np.zeros_like(table)
    for si, state in enumerate(states):
        for d, direction in enumerate(DIRECTIONS):
            for ci, cls in enumerate(flag_classes):
                asked = cls if refines_acks else _BASE_OF.get(cls, cls)
                result, action = rule(state, direction, asked)
                if result not in codes or action not in action_codes:
                    raise ValueError(f"rule({state!r}, {direction!r}, {cls!r}) gave "
                                     f"{(result, action)!r}: no such state or action")
                table[si, d, ci] = codes[result]
                actions[si, d, ci] = action_codes[action]
    return _finish_model(name, states, flag_classes, classify, table, actions, timeouts,
                         illegal, endpoint_states, pairs, endpoint_timeouts)


def _result_codes(states: tuple) -> dict[str, int]:
    """Cell results by name: every state's code, and INVALID / IGNORE."""
    codes = {"invalid": INVALID, "ignore": IGNORE}
    codes.update((s, i) for i, s in enumerate(states))
    return codes


def _finish_model(name: str, states: tuple, flag_classes: tuple,
                  classify: Callable[[int], str], table: np.ndarray, actions: np.ndarray,
                  timeouts: Mapping[str, float] | None, illegal: Sequence[str] | None,
                  endpoint_states: Sequence[str] = (), pairs: np.ndarray | None = None,
                  endpoint_timeouts: Mapping[str, float] | None = None) -> Model:
    """The Model of compiled tables; illegal classes default to the scan classes of
    FLAG_CLASSES when those classes are used."""
    if illegal is None:
        illegal = ILLEGAL_CLASSES if flag_classes == FLAG_CLASSES else ()
    return Model(name, states, flag_classes, _class_table(classify, flag_classes), table,
                 actions, dict(timeouts or {}), tuple(illegal), tuple(endpoint_states), pairs,
                 dict(endpoint_timeouts or {}))


def _class_table(classify: Callable[[int], str], flag_classes: tuple) -> np.ndarray:
    class_of = np.empty(256, dtype=np.uint8)
    for flags in range(256):
        cls_name = classify(flags)
        if cls_name not in flag_classes:
            raise ValueError(f"classify({flags:#04x}) gave unknown class {cls_name!r}")
        class_of[flags] = flag_classes.index(cls_name)
    return class_of


CONNTRACK_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                    "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2", "SYN_RECV2")

# Linux defaults, tcp_timeouts[] in net/netfilter/nf_conntrack_proto_tcp.c (seconds).
# SYN_RECV2 is SYN_RECV reached by simultaneous open and keeps its timeout.
CONNTRACK_TIMEOUTS = {
    "SYN_SENT": 120, "SYN_RECV": 60, "ESTABLISHED": 5 * 24 * 3600, "FIN_WAIT": 120,
    "CLOSE_WAIT": 60, "LAST_ACK": 30, "TIME_WAIT": 120, "CLOSE": 10, "SYN_SENT2": 120,
    "SYN_RECV2": 60,
}

CONNTRACK_ALIASES = {
    "sNO": "NONE", "sSS": "SYN_SENT", "sSR": "SYN_RECV", "sES": "ESTABLISHED",
    "sFW": "FIN_WAIT", "sCW": "CLOSE_WAIT", "sLA": "LAST_ACK", "sTW": "TIME_WAIT",
    "sCL": "CLOSE", "sS2": "SYN_SENT2", "sR2": "SYN_RECV2", "sIV": "invalid", "sIG": "ignore",
}

# Linux's TCP conntrack table, flags only. Cells follow the kernel's table; where the kernel
# changes a result in code after the lookup, the change is written into the table instead:
#  - SYN_RECV2 is the kernel's SYN_RECV with its IP_CT_TCP_SIMULTANEOUS_OPEN flag set (entered
#    from SYN_SENT2); there a reply ACK completes the handshake.
#  - `*` on SYN in TIME_WAIT/CLOSE: the kernel kills the entry and re-evaluates the SYN as new.
#    In CLOSE it does so only if a FIN was seen or the RST came from the SYN's sender; otherwise
#    it ignores the SYN and resynchronises on a SYN-ACK that acknowledges it, which needs
#    sequence numbers. Flags-only, fasttcp takes the reopen both ways.
#  - `~` on RST: an entry whose responder has not answered is deleted at once.
# Left out, because they need sequence numbers: window checks, the RFC 5961 challenge-ACK case in
# LAST_ACK, and resynchronising on an ignored SYN. Also left out: an originator SYN ignored in
# SYN_RECV2 makes the kernel forget the simultaneous-open flag (it resets last_flags), so a later
# reply ACK leaves it in SYN_RECV; here SYN_RECV2 keeps completing on that ACK.
CONNTRACK_RULES = """
# dir  class        sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2  sR2
orig   SYN          sSS  sSS  sIG  sIG  sIG  sIG  sIG  sSS* sSS* sS2  sIG
#   sNO: a new connection; sSS: retransmitted SYN; sSR..sLA: a SYN inside a connection is
#   either an error the receiver answers with RST or a sign we are out of sync: let it pass
#   unjudged; sTW, sCL: reopened (RFC 1122); sS2: late retransmitted SYN.
orig   SYNACK       sIV  sIV  sSR  sIV  sIV  sIV  sIV  sIV  sIV  sR2  sR2
#   Only an originator in simultaneous open sends a SYN-ACK (sS2 -> sR2, retransmitted in
#   sSR/sR2); anywhere else it is invalid.
orig   FIN          sIV  sIV  sFW  sFW  sLA  sLA  sLA  sTW  sCL  sIV  sFW
#   No FIN before the handshake answer; a FIN starts the close (sFW), a FIN from the other
#   side after it waits for the last ACK (sLA); retransmitted FINs keep the state.
orig   ACK          sPU  sIV  sES  sES  sCW  sCW  sTW  sTW  sCL  sIV  sES
#   sNO: mid-stream pickup (sPU: ESTABLISHED when loose, else invalid); sSS/sS2: an ACK
#   before any SYN-ACK is invalid; sSR: handshake complete; sFW: the FIN is acknowledged; sLA: the last ACK.
orig   RST          sIV  sCL~ sCL~ sCL~ sCL~ sCL~ sCL~ sCL~ sCL~ sCL~ sCL~
#   A RST closes any connection; with no reply seen yet the entry is dropped at once.
resp   SYN          sIV  sS2  sIV  sIV  sIV  sIV  sIV  sSS* sIV  sS2  sIV
#   sSS: simultaneous open; sTW: reopened by the other side, who becomes the originator;
#   anywhere else the responder has no reason to send a SYN.
resp   SYNACK       sIV  sSR  sIG  sIG  sIG  sIG  sIG  sIG  sIG  sR2  sIG
#   sSS: the standard answer; sS2: simultaneous open; later: retransmitted or answering a
#   SYN we let pass, so ignored.
resp   FIN          sIV  sIV  sFW  sFW  sLA  sLA  sLA  sTW  sCL  sIV  sFW
resp   ACK          sIV  sIG  sSR  sES  sCW  sCW  sTW  sTW  sCL  sIG  sES
#   sSS: may be a half-open connection, ignored; sSR: may answer a late SYN; sR2: completes a
#   simultaneous open.
resp   RST          sIV  sCL~ sCL~ sCL~ sCL~ sCL~ sCL~ sCL~ sCL~ sCL~ sCL~
# Combinations no stack sends: Linux rejects them before the state machine (tcp_error).
*      SYNFIN|SYNRST|FIN_NOACK|NULL|XMAS|OTHER  sIV
"""


def conntrack(loose: bool = True) -> Model:
    """Linux netfilter's TCP tracker, flags only.

    Parameters
    ----------
    loose : bool
        Pick up connections mid-stream from an ACK (the kernel's ``nf_conntrack_tcp_loose``,
        on by default). When False, only a SYN creates a connection.

    >>> conntrack(loose=False).next_state("NONE", "orig", "ACK")
    ('invalid', '')
    """
    aliases = dict(CONNTRACK_ALIASES, sPU="ESTABLISHED" if loose else "invalid")
    return compile_model("conntrack" if loose else "conntrack-strict", CONNTRACK_STATES,
                         aliases, CONNTRACK_RULES, timeouts=CONNTRACK_TIMEOUTS)


RFC793_STATES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1",
                 "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")

# Seconds an endpoint state may sit idle; a connection's timeout is the larger of its two
# endpoints' (it lives while either end may still send). ESTABLISHED and CLOSED follow Linux
# conntrack (5 days, 10 s); TIME_WAIT is 2 MSL with RFC 793's MSL of 2 minutes; the handshake
# and closing states get conntrack's 2 minutes, SYN_RCVD and CLOSE_WAIT its 60 s, LAST_ACK 30 s.
RFC793_ENDPOINT_TIMEOUTS = {
    "CLOSED": 10, "LISTEN": 120, "SYN_SENT": 120, "SYN_RCVD": 60, "ESTABLISHED": 5 * 24 * 3600,
    "FIN_WAIT_1": 120, "FIN_WAIT_2": 120, "CLOSE_WAIT": 60, "CLOSING": 120, "LAST_ACK": 30,
    "TIME_WAIT": 240,
}

# The states an endpoint can send a FIN from, and what sending it makes of the sender.
_FIN_SENT = {"ESTABLISHED": "FIN_WAIT_1", "SYN_RCVD": "FIN_WAIT_1", "CLOSE_WAIT": "LAST_ACK",
             "FIN_WAIT_1": "FIN_WAIT_1", "FIN_WAIT_2": "FIN_WAIT_2", "CLOSING": "CLOSING",
             "LAST_ACK": "LAST_ACK", "TIME_WAIT": "TIME_WAIT"}
# What receiving a FIN (which carries ACK) makes of the receiver: flags-only, its ACK is taken
# to acknowledge a FIN the receiver sent, so FIN_WAIT_1 goes straight to TIME_WAIT.
_FIN_RECEIVED = {"ESTABLISHED": "CLOSE_WAIT", "SYN_RCVD": "CLOSE_WAIT", "FIN_WAIT_1": "TIME_WAIT",
                 "FIN_WAIT_2": "TIME_WAIT", "CLOSING": "TIME_WAIT"}
# What receiving an ACK makes of the receiver: it is taken to acknowledge the receiver's SYN
# or FIN if one is outstanding.
_ACK_RECEIVED = {"SYN_RCVD": "ESTABLISHED", "FIN_WAIT_1": "FIN_WAIT_2", "CLOSING": "TIME_WAIT",
                 "LAST_ACK": "CLOSED"}
# States from which an endpoint sends ACKs (with or without data).
_ACK_SENDERS = {"ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK",
                "TIME_WAIT"}
_FINISHED = {"CLOSED", "TIME_WAIT"}


def _rfc793_first(cls: str) -> tuple[str, str, str] | str:
    """The pair a connection's first segment opens, as (sender, receiver, action)."""
    return {"SYN": ("SYN_SENT", "LISTEN", ""),
            # the SYN was missed: the receiver of the SYN-ACK is the originator
            "SYNACK": ("SYN_RCVD", "SYN_SENT", "flip"),
            "ACK": ("ESTABLISHED", "ESTABLISHED", "pickup"),
            "FIN": ("FIN_WAIT_1", "CLOSE_WAIT", "pickup"),
            "RST": ("CLOSED", "CLOSED", ""),  # a lone RST is recorded, as Zeek does
            }.get(cls, "invalid")  # illegal combinations never open a connection


def _rfc793_segment(sender: str, receiver: str, cls: str) -> tuple[str, str, str] | str:
    """The observer's inference for one segment of a live connection.

    Returns (sender', receiver', action) or a verdict. The observer assumes each segment it
    sees reaches the receiver, and, without sequence numbers, that an ACK acknowledges
    whatever SYN or FIN the receiver has outstanding.
    """
    if cls == "RST":
        return ("CLOSED", "CLOSED", "")
    if cls == "ACK_EARLY":
        # the receiver's FIN is still unacknowledged: it stays where it is
        return (sender, receiver, "") if sender in _ACK_SENDERS else "invalid"
    if cls == "FIN_EARLY":
        if receiver == "FIN_WAIT_1" and sender in ("ESTABLISHED", "CLOSE_WAIT"):
            # the FINs crossed (RFC 793 figure 14): each end receives the other's FIN before
            # its own is acknowledged
            return ("CLOSING", "CLOSING", "")
        if sender not in _FIN_SENT:
            return "invalid"
        # the receiver's FIN is still unacknowledged: it stays where it is (RFC 793 3.9: a
        # FIN in CLOSING leaves CLOSING), the sender moves as any FIN moves it
        return (_FIN_SENT[sender], receiver, "")
    if cls not in ("SYN", "SYNACK", "FIN", "ACK"):
        return "invalid"  # an illegal combination: counted, never acted on
    if cls == "SYN" and sender in _FINISHED and receiver in _FINISHED:
        return ("SYN_SENT", "LISTEN", "reopen")  # the 4-tuple is used again
    if sender == receiver == "CLOSED":
        return "ignore"  # late segments of a reset connection
    if cls == "SYN":
        if sender == "SYN_SENT":
            return (sender, receiver, "")  # retransmitted SYN
        if sender == "LISTEN" and receiver == "SYN_SENT":
            # simultaneous open: the SYNs crossed, and each reaches the other (figure 8)
            return ("SYN_RCVD", "SYN_RCVD", "")
        return "ignore"  # a SYN inside a live connection: out of sync or an attack; let pass
    if cls == "SYNACK":
        if sender == "LISTEN" and receiver == "SYN_SENT":
            return ("SYN_RCVD", "SYN_SENT", "")  # the answer; the client is established on its ACK
        if sender == "SYN_RCVD" and receiver == "SYN_SENT":
            return (sender, receiver, "")  # retransmitted SYN-ACK
        if sender == "SYN_RCVD" and receiver == "SYN_RCVD":
            return ("SYN_RCVD", "ESTABLISHED", "")  # simultaneous open: the first SYN-ACK
        if sender == "ESTABLISHED" and receiver == "SYN_RCVD":
            return ("ESTABLISHED", "ESTABLISHED", "")  # simultaneous open: the second one
        return "ignore" if sender in _ACK_SENDERS else "invalid"
    if cls == "ACK":
        if sender == "SYN_SENT" and receiver == "SYN_RCVD":
            return ("ESTABLISHED", "ESTABLISHED", "")  # the third segment of the handshake
        if sender == "CLOSED" and receiver == "TIME_WAIT":
            # An end we took for LAST_ACK acknowledges the other FIN after its own last ACK
            # came: it was CLOSING, the FINs crossed (simultaneous close). Both end in TIME_WAIT.
            return ("TIME_WAIT", "TIME_WAIT", "")
        if sender not in _ACK_SENDERS:
            return "invalid"  # nothing to acknowledge yet, or the sender is closed
        return (sender, _ACK_RECEIVED.get(receiver, receiver), "")
    # FIN
    if sender == "CLOSED" and receiver == "TIME_WAIT":
        # the last ACK was lost after we saw it: the peer, still in LAST_ACK, sends its FIN
        # again (what TIME_WAIT waits for)
        return ("LAST_ACK", "TIME_WAIT", "")
    if sender not in _FIN_SENT:
        return "invalid"  # no FIN before the handshake is answered
    return (_FIN_SENT[sender], _FIN_RECEIVED.get(receiver, receiver), "")


def _rfc793_rule(state: str, direction: str, cls: str) -> tuple[str, str]:
    if state == "NONE":  # no connection: this segment opens one (only the orig row is used)
        outcome = _rfc793_first(cls)
        if isinstance(outcome, str):
            return outcome, ""
        sender, receiver, action = outcome
        first, second = (receiver, sender) if action == "flip" else (sender, receiver)
        return f"{first}/{second}", action
    orig, resp = state.split("/")
    sender, receiver = (orig, resp) if direction == "orig" else (resp, orig)
    outcome = _rfc793_segment(sender, receiver, cls)
    if isinstance(outcome, str):
        return outcome, ""
    sender, receiver, action = outcome
    if action == "reopen" or direction == "orig":  # the sender is, or becomes, the originator
        return f"{sender}/{receiver}", action
    return f"{receiver}/{sender}", action


def rfc793() -> Model:
    """The RFC 793 states of both endpoints as an observer infers them (the default model).

    Each state is a pair ``ORIGINATOR/RESPONDER`` of RFC 793 endpoint states, 121 in all,
    kept as one code (plus NONE, before the first segment); ``Tracker.histogram(by="orig")`` and ``by="resp"`` give the endpoint
    views. What the observer cannot know for sure it infers as follows (each is tested):

    * every segment seen reaches its receiver;
    * flags only, an ACK acknowledges the receiver's outstanding SYN or FIN, and so does the
      ACK a FIN carries: FIN_WAIT_1 answered by a FIN-ACK goes to TIME_WAIT. The crossing FINs
      of a simultaneous close (RFC 793 figure 14) carry ACKs that do not cover the other FIN,
      which only sequence numbers show; without them the close first reads as ordinary
      (TIME_WAIT/LAST_ACK, then TIME_WAIT/CLOSED), and the responder's own final ACK, which an
      ordinary close never has, turns it into TIME_WAIT/TIME_WAIT: the CLOSING step is not seen.
      With sequence numbers the early classes say which ACKs do not cover the peer's FIN: such
      an ACK leaves its receiver where it is, and crossing FINs give CLOSING/CLOSING;
    * the client of a handshake is ESTABLISHED when it sends the third segment, the server
      when it receives it (DESIGN: "orig ACK -> both ESTABLISHED");
    * a first segment that is a SYN-ACK means the SYN was missed: the roles are flipped, as
      Zeek does, and the connection is flagged (``STATUS_FLIPPED``);
    * a first segment without SYN is a mid-stream pickup: both ends ESTABLISHED (or closing,
      for a FIN), flagged ``STATUS_PICKED_UP``; a lone RST is recorded as CLOSED/CLOSED;
    * a RST leaves the pair CLOSED/CLOSED, where late segments are ignored; a SYN once both
      ends are CLOSED or in TIME_WAIT reopens the 4-tuple, its sender becoming the
      originator; a SYN inside a live connection is ignored;
    * simultaneous open follows RFC 793 figure 8: the crossing SYNs reach both ends
      (SYN_RCVD/SYN_RCVD), each SYN-ACK then establishes its receiver;
    * a FIN arriving after the final ACK (TIME_WAIT/CLOSED) means that ACK was lost: the
      sender is back in LAST_ACK;
    * illegal flag combinations are invalid everywhere, never create a connection, and are
      counted per connection and per class.

    >>> m = rfc793()
    >>> m.next_state("SYN_SENT/LISTEN", "resp", "SYNACK")
    ('SYN_SENT/SYN_RCVD', '')
    """
    # NONE, before the first segment, is apart from CLOSED/CLOSED, where a reset leaves a pair;
    # for the endpoint histograms it counts as CLOSED on both sides (it never holds a connection)
    states = ("NONE",) + tuple(f"{o}/{r}" for o in RFC793_STATES for r in RFC793_STATES)
    pairs = np.array([(0, 0)] + [(i, j) for i in range(len(RFC793_STATES))
                                 for j in range(len(RFC793_STATES))], dtype=np.uint8)
    timeouts = {f"{o}/{r}": max(RFC793_ENDPOINT_TIMEOUTS[o], RFC793_ENDPOINT_TIMEOUTS[r])
                for o in RFC793_STATES for r in RFC793_STATES}
    return tabulate_model("rfc793", states, _rfc793_rule, timeouts=timeouts,
                          endpoint_states=RFC793_STATES, pairs=pairs,
                          endpoint_timeouts=RFC793_ENDPOINT_TIMEOUTS, refines_acks=True)


MODELS: Mapping[str, Model] = MappingProxyType({"rfc793": rfc793(), "conntrack": conntrack()})


def get_model(model: str | Model) -> Model:
    """The built-in model named `model`, or `model` itself if it is a Model."""
    if isinstance(model, Model):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; built-in models: {sorted(MODELS)}") from None
