"""A plain-Python tracker with the engine's semantics: one dict, one loop, no tricks.

It is the oracle the property tests hold the compiled engine to, and the baseline the benchmarks
measure against (what a Python user would write by hand). It shares only the compiled `Model`
tables with the engine, read here as nested lists.

>>> import numpy as np
>>> ref = ReferenceTracker("conntrack")  # the default is rfc793, like Tracker's
>>> ref.update([0, 1], [1, 2], [1000, 80], [2, 1], [80, 1000], [0x02, 0x12])
[(1, 'new', True), (2, 'valid', True)]
>>> ref.histogram()["SYN_RECV"]
1
"""
from __future__ import annotations

import math
import re
from collections import deque
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np

from fasttcp._engine import (
    ACTION_CLOSE_UNREPLIED,
    ACTION_FLIP,
    ACTION_PICKUP,
    ACTION_REOPEN,
    IGNORE,
    INVALID,
)
from fasttcp.models import Model, get_model

PKTS_MAX = 2**32 - 1  # packet counters are uint32 in the engine and saturate there


class Conn:
    """One connection's record, field for field as in the engine's CONN4/CONN6 dtypes."""

    __slots__ = ("orig_h", "orig_p", "resp_h", "resp_p", "state", "replied", "flipped",
                 "picked_up", "illegal", "orig_flags", "resp_flags", "orig_pkts", "resp_pkts",
                 "orig_bytes", "resp_bytes", "first_ts", "last_ts", "zeek", "sides")

    def __init__(self, orig_h: Hashable, orig_p: int, resp_h: Hashable, resp_p: int,
                 state: int, ts: int, flows: bool = False) -> None:
        self.orig_h, self.orig_p, self.resp_h, self.resp_p = orig_h, orig_p, resp_h, resp_p
        self.state = state
        self.replied = self.flipped = self.picked_up = False
        self.illegal = 0  # illegal segments, saturating at 15 as in the engine
        self.orig_flags = self.resp_flags = 0
        self.orig_pkts = self.resp_pkts = 0
        self.orig_bytes = self.resp_bytes = 0
        self.first_ts = self.last_ts = ts
        self.zeek = ZeekView() if flows else None
        self.sides = [SeqSide(), SeqSide()]     # unseen until a segment with seq columns

    def flow(self) -> tuple:
        """(orig_h, orig_p, resp_h, resp_p, history, conn_state, orig_pkts, resp_pkts)."""
        assert self.zeek is not None, "a tracker made with flows=True keeps flows"
        history = self.zeek.history(self.flipped)
        return (self.orig_h, self.orig_p, self.resp_h, self.resp_p, history,
                self.zeek.conn_state(history, self.orig_bytes, self.resp_bytes),
                self.orig_pkts, self.resp_pkts)

    def count(self, direction: int, flags: int, length: int, ts: int,
              retransmission: bool = False, zero_window: bool = False) -> None:
        if direction == 0:
            self.orig_pkts = min(self.orig_pkts + 1, PKTS_MAX)
            self.orig_bytes += length
            self.orig_flags |= flags
        else:
            self.resp_pkts = min(self.resp_pkts + 1, PKTS_MAX)
            self.resp_bytes += length
            self.resp_flags |= flags
        self.last_ts = max(self.last_ts, ts)
        if self.zeek is not None:
            self.zeek.step(direction, flags, length, retransmission, zero_window)


def _before(a: int, b: int) -> bool:
    """a comes before b in 32-bit sequence space."""
    return ((a - b) & 0xFFFFFFFF) >= 0x80000000


def _after(a: int, b: int) -> bool:
    return _before(b, a)


class SeqSide:
    """One direction's sequence space (the engine's seq_dir_t)."""

    __slots__ = ("end", "maxend", "maxwin", "fin_end", "scale", "seen", "fin", "scaled",
                 "limit", "picked_up")

    def __init__(self) -> None:
        self.end = self.maxend = self.maxwin = self.fin_end = self.scale = 0
        self.seen = self.fin = self.scaled = self.limit = self.picked_up = False


def sequence_check(sides: list, d: int, flags: int, seq: int, ack: int, window: int,
                   wscale: int, length: int) -> str:
    """Checks one segment against its receiver's window and records it (netfilter's four
    bounds): "in", "out" (out of window) or "retransmission"."""
    snd, rcv = sides[d], sides[1 - d]
    syn, fin, rst, has_ack = (bool(flags & bit) for bit in (0x02, 0x01, 0x04, 0x10))
    end = (seq + length + syn + fin) & 0xFFFFFFFF
    if not snd.seen and not syn:
        snd.picked_up = True            # its SYN was missed
    if syn:
        pass                            # a SYN's window is never scaled
    elif snd.picked_up or rcv.picked_up:
        window <<= 14                   # a missed SYN: the scale is unknown, take the largest
    elif snd.scaled and rcv.scaled:
        window <<= snd.scale
    result = "in"
    if not snd.seen:
        snd.seen, snd.end = True, end
        if not snd.limit or _after(end, snd.maxend):
            snd.maxend, snd.limit = end, True
        snd.maxwin = window or 1
    else:
        if rcv.seen:
            max_ack_window = max(snd.maxwin, 66000)
            if (_after(seq, snd.maxend)
                    or _before(end, (snd.end - rcv.maxwin) & 0xFFFFFFFF)
                    or (has_ack and (_after(ack, rcv.end) or
                                     _before(ack, (rcv.end - max_ack_window) & 0xFFFFFFFF)))
                    or (snd.fin and length and _after(end, snd.fin_end))):
                return "out"
        if _after(end, snd.end):
            snd.end = end
        elif length and not rst:
            result = "retransmission"
        snd.maxwin = max(snd.maxwin, window)
    if has_ack and not rst:
        limit = (ack + (window or 1)) & 0xFFFFFFFF
        if not rcv.limit or _after(limit, rcv.maxend):
            rcv.maxend, rcv.limit = limit, True
    if fin and not snd.fin:
        snd.fin, snd.fin_end = True, end
    if syn and wscale >= 0:
        snd.scaled, snd.scale = True, min(wscale, 14)
    return result


class ZeekView:
    """What Zeek's TCP analyzer would say about one connection, from flags and lengths: the
    history letters and each endpoint's state (zeek/zeek TCPSessionAdapter: update_history,
    UpdateStateMachine; conn_state from base/protocols/conn/main.zeek)."""

    def __init__(self) -> None:
        self.letters: list[str] = []
        self.seen: set[tuple[str, int]] = set()
        self.state = ["INACTIVE", "INACTIVE"]       # originator, responder
        self.previous = ["INACTIVE", "INACTIVE"]

    def _set(self, side: int, state: str) -> None:
        if self.state[side] != state:
            self.previous[side], self.state[side] = self.state[side], state

    def _letter(self, side: int, letter: str) -> None:
        kind = "S" if letter == "H" else letter      # S and H share one "seen" mark
        if (kind, side) not in self.seen:
            self.seen.add((kind, side))
            self.letters.append(letter if side == 0 else letter.lower())

    def step(self, side: int, flags: int, length: int, retransmission: bool = False,
             zero_window: bool = False) -> None:
        syn, fin, rst, ack = (bool(flags & bit) for bit in (0x02, 0x01, 0x04, 0x10))
        if syn + fin + rst > 1:
            self._letter(side, "I" if fin and rst else "Q")
        elif syn:
            self._letter(side, "H" if ack else "S")
        elif fin:
            self._letter(side, "F")
        elif rst:
            self._letter(side, "R")
        elif length:
            self._letter(side, "D")
        elif ack:
            self._letter(side, "A")
        if zero_window:
            self._letter(side, "W")
        if retransmission:
            self._letter(side, "T")
        me, peer = side, 1 - side
        state = self.state[me]
        if state == "INACTIVE":
            if syn and side == 0:
                self._set(me, "SYN_ACK_SENT" if ack else "SYN_SENT")
            elif syn:
                if self.state[peer] == "SYN_SENT":
                    self._set(peer, "ESTABLISHED")
                self._set(me, "ESTABLISHED")
            if fin:
                self._set(me, "CLOSED")
            if rst:
                self._set(me, "RESET")
            if self.state[me] == "INACTIVE":
                if side == 1 and not length and self.state[0] == "SYN_SENT":
                    pass
                elif ack and self.state[peer] == "ESTABLISHED":
                    self._set(me, "ESTABLISHED")
                else:
                    self._set(me, "PARTIAL")
        elif state in ("SYN_SENT", "SYN_ACK_SENT"):
            if fin:
                self._set(me, "CLOSED")
            if rst:
                self._set(me, "RESET")
        elif state in ("ESTABLISHED", "PARTIAL"):
            if syn and state == "PARTIAL" and self.state[peer] == "INACTIVE" and not ack:
                self._set(me, "SYN_SENT")
            if fin and not rst:
                self._set(me, "CLOSED")
                if self.state[peer] == "RESET" and self.previous[peer] == "CLOSED":
                    self._set(peer, "CLOSED")
            if rst:
                self._set(me, "RESET")
        elif state == "CLOSED" and rst and self.state[peer] != "CLOSED":
            self._set(me, "RESET")

    def history(self, flipped: bool) -> str:
        return ("^" if flipped else "") + "".join(self.letters)

    def conn_state(self, history: str, orig_bytes: int, resp_bytes: int) -> str:
        o, r = self.state
        o_inactive, r_inactive = o in ("INACTIVE", "PARTIAL"), r in ("INACTIVE", "PARTIAL")
        if r == "RESET":
            if o in ("SYN_SENT", "SYN_ACK_SENT") or (o == "RESET" and orig_bytes == 0
                                                     and resp_bytes == 0):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if o == "RESET":
            if r_inactive:
                return "RSTOS0" if re.fullmatch(r"\^?S[^HAFGIQ]*R.*", history) else "OTH"
            return "RSTO"
        if o == "CLOSED" and r == "CLOSED":
            return "SF"
        if o == "CLOSED":
            return "SH" if r_inactive else "S2"
        if r == "CLOSED":
            return "SHR" if o_inactive else "S3"
        if o == "SYN_SENT" and r == "INACTIVE":
            return "S0"
        if o == "ESTABLISHED" and r == "ESTABLISHED":
            return "S1"
        return "OTH"


class ReferenceTracker:
    """Dict-based tracker: ``conns[(endpoint, endpoint)] -> Conn`` with endpoints sorted."""

    def __init__(self, model: str | Model = "rfc793",
                 timeouts: Optional[Mapping[str, float]] = None,
                 capacity: Optional[int] = None, flows: bool = False,
                 max_clock_jump: Optional[float] = 60.0, clock_confirm: int = 2) -> None:
        """`timeouts` (seconds per state name) turns expiry on, by the segments' clock as the
        engine's "events" clock does (`max_clock_jump`, `clock_confirm`: as `Tracker`'s);
        `capacity` turns eviction on at that many connections (a full table first expires by
        the new segment's time, at most the clock); `flows` keeps a ZeekView per
        connection."""
        self.model = get_model(model)
        self.flows = flows
        self.timeout = (None if timeouts is None else
                        [math.inf if timeouts[name] == math.inf else round(timeouts[name] * 1e9)
                         for name in self.model.states])
        self.now = 0
        self.clock: Optional[int] = None      # the segments' clock, once one has been seen
        self.max_jump = None if max_clock_jump is None else round(max_clock_jump * 1e9)
        self.confirm = clock_confirm
        self.suspects: list[int] = []         # the current run of segments too far ahead
        self.limit = 0                        # the clock after the batch being applied
        self.capacity = capacity
        self.evict_queue: deque = deque()   # (key, first_ts) of connections, by creation
        self._class_of = self.model.class_of.tolist()
        self._table = self.model.table.tolist()
        self._actions = self.model.actions.tolist()
        self._illegal = self.model.illegal_mask.tolist()
        self.class_counts = [0] * len(self.model.flag_classes)
        self.conns: dict[tuple, Conn] = {}
        self.hist = [0] * len(self.model.states)
        self.stats = dict.fromkeys(("events", "new", "valid", "invalid", "ignored",
                                    "untracked", "closed", "expired", "evicted", "refused",
                                    "out_of_window", "retransmitted", "zero_window",
                                    "clock_suspect", "clock_jumps"), 0)
        self._early = self.model.early.tolist()
        self.sequence_aware = False     # set by the first batch with sequence columns
        self.ended: list[tuple[Conn, str]] = []   # connections that left, and why

    @staticmethod
    def key(src: Hashable, sport: int, dst: Hashable, dport: int) -> tuple:
        a, b = (src, sport), (dst, dport)
        return a + b if a <= b else b + a

    def process(self, ts: int, src: Hashable, sport: int, dst: Hashable, dport: int,
                flags: int, length: int = 0,
                sequence: Optional[tuple] = None) -> tuple[int, str, bool]:
        """Applies one segment; `sequence` is its (seq, ack, window, wscale).

        Returns (state code after it, verdict name, whether it belonged to a connection).
        """
        stats = self.stats
        stats["events"] += 1
        cls = self._class_of[flags]
        illegal = self._illegal[cls]
        self.class_counts[cls] += 1
        key = self.key(src, sport, dst, dport)
        conn = self.conns.get(key)
        if conn is not None and self.timeout is not None and \
                ts - conn.last_ts >= self.timeout[conn.state]:
            self._remove(key, "expired")     # idle its whole timeout: this one starts afresh
            conn = None
        if conn is None:
            nxt = self._table[0][0][cls]
            action = self._actions[0][0][cls]
            if nxt == INVALID or nxt == IGNORE:
                verdict = "invalid" if nxt == INVALID else "ignored"
                stats[verdict] += 1
                stats["untracked"] += 1
                return 0, verdict, False
            if self.capacity is not None and len(self.conns) >= self.capacity \
                    and self.timeout is not None:
                self.expire(min(ts, self.limit))
            if self.capacity is not None and len(self.conns) >= self.capacity \
                    and not self._evict():
                stats["refused"] += 1
                stats["ignored"] += 1
                stats["untracked"] += 1
                return 0, "ignored", False
            self.conns[key] = self._start(src, sport, dst, dport, nxt, ts, flags, length, action,
                                          illegal, sequence)
            self.evict_queue.append((key, ts))
            self.hist[nxt] += 1
            stats["new"] += 1
            if action == ACTION_CLOSE_UNREPLIED:
                self._remove(key, "closed")
            return nxt, "new", True

        direction = 0 if (conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p) == \
            (src, sport, dst, dport) else 1
        in_window = True
        letters = (False, False)            # Zeek's T and W for this segment
        if sequence is not None:
            seq, ack, window, wscale = sequence
            peer = conn.sides[1 - direction]
            if flags & 0x10 and peer.fin and _before(ack, peer.fin_end):
                cls = self._early[cls]      # an ack that does not yet cover the peer's FIN
            check = sequence_check(conn.sides, direction, flags, seq, ack, window, wscale,
                                   length)
            letters = (check == "retransmission", window == 0 and not flags & 0x04)
            stats["retransmitted"] += letters[0]
            stats["zero_window"] += letters[1]
            in_window = check != "out"
        conn.illegal = min(15, conn.illegal + self._illegal[cls])
        nxt = self._table[conn.state][direction][cls]
        action = self._actions[conn.state][direction][cls]
        if not in_window and action not in (ACTION_REOPEN, ACTION_FLIP, ACTION_PICKUP):
            nxt = INVALID
            stats["out_of_window"] += 1
        if nxt == INVALID:
            conn.count(direction, flags, length, ts, *letters)
            stats["invalid"] += 1
            return conn.state, "invalid", True
        if nxt == IGNORE:
            conn.count(direction, flags, length, ts, *letters)
            conn.replied = conn.replied or direction == 1
            stats["ignored"] += 1
            return conn.state, "ignored", True
        self.hist[conn.state] -= 1
        self.hist[nxt] += 1
        if action in (ACTION_REOPEN, ACTION_FLIP, ACTION_PICKUP):
            self.ended.append((conn, "closed"))
            stats["closed"] += 1
            stats["new"] += 1
            self.conns[key] = self._start(src, sport, dst, dport, nxt, ts, flags, length, action,
                                          illegal, sequence)
            self.evict_queue.append((key, ts))
            return nxt, "new", True
        conn.count(direction, flags, length, ts, *letters)
        conn.state = nxt
        stats["valid"] += 1
        if action == ACTION_CLOSE_UNREPLIED and not conn.replied:
            self._remove(key, "closed")
        elif direction == 1:
            conn.replied = True
        return nxt, "valid", True

    def _start(self, src: Hashable, sport: int, dst: Hashable, dport: int, state: int, ts: int,
               flags: int, length: int, action: int, illegal: int,
               sequence: Optional[tuple]) -> Conn:
        """A new connection opened by this segment (`illegal` 1 if its flags are)."""
        zero_window = sequence is not None and sequence[2] == 0 and not flags & 0x04
        if action == ACTION_FLIP:  # the receiver is the originator
            conn = Conn(dst, dport, src, sport, state, ts, self.flows)
            conn.flipped = conn.replied = True
            conn.count(1, flags, length, ts, False, zero_window)
        else:
            conn = Conn(src, sport, dst, dport, state, ts, self.flows)
            conn.picked_up = action == ACTION_PICKUP
            conn.count(0, flags, length, ts, False, zero_window)
        conn.illegal = illegal
        if sequence is not None:
            seq, ack, window, wscale = sequence
            sequence_check(conn.sides, int(conn.flipped), flags, seq, ack, window, wscale,
                           length)
        return conn

    def _remove(self, key: tuple, why: str) -> None:
        conn = self.conns.pop(key)
        self.ended.append((conn, why))
        self.hist[conn.state] -= 1
        self.stats[why] += 1

    def _evict(self) -> bool:
        """Drops the oldest listed connection never answered; False if there is none."""
        while self.evict_queue:
            key, first_ts = self.evict_queue.popleft()
            conn = self.conns.get(key)
            if conn is not None and not conn.replied and \
                    conn.first_ts % 2**32 == first_ts % 2**32:
                self._remove(key, "evicted")
                return True
        return False

    def expire(self, now: int) -> None:
        """Ends every connection idle for its state's whole timeout at `now`."""
        self.now = max(self.now, now)
        assert self.timeout is not None
        for key, conn in list(self.conns.items()):
            if conn.last_ts + self.timeout[conn.state] <= self.now:
                self._remove(key, "expired")

    def update(self, ts: Sequence[int], src: Any, sport: Sequence[int], dst: Any,
               dport: Sequence[int], flags: Sequence[int],
               length: Optional[Sequence[int]] = None, seq: Optional[Sequence[int]] = None,
               ack: Optional[Sequence[int]] = None, window: Optional[Sequence[int]] = None,
               wscale: Optional[Sequence[int]] = None) -> list[tuple[int, str, bool]]:
        """Applies a batch given as sequences or numpy arrays (IPv6 rows of 16 bytes); with
        seq, ack and window, sequence-aware from then on."""
        src, dst = _hashable_addresses(src), _hashable_addresses(dst)
        ts, sport, dport, flags = (np.asarray(a).tolist() for a in (ts, sport, dport, flags))
        length = [0] * len(ts) if length is None else np.asarray(length).tolist()
        sequences: list = [None] * len(ts)
        if seq is not None:
            self.sequence_aware = True
            scale = [-1] * len(ts) if wscale is None else np.asarray(wscale).tolist()
            sequences = list(zip(np.asarray(seq).tolist(), np.asarray(ack).tolist(),
                                 np.asarray(window).tolist(), scale))
        for t in ts:
            self._tick(t)
        self.limit = self.now if self.clock is None else self.clock
        process = self.process
        results = [process(*event) for event in zip(ts, src, sport, dst, dport, flags, length,
                                                    sequences)]
        if self.timeout is not None and ts:
            self.expire(self.limit)
        return results

    def _tick(self, ts: int) -> None:
        """The clock rule: follow a segment at most max_jump ahead; a jump further needs
        `confirm` segments in a row that far ahead, and goes to the earliest of them."""
        if self.clock is None or self.max_jump is None:
            self.clock = ts if self.clock is None else max(self.clock, ts)
        elif ts - self.clock <= self.max_jump:
            self.clock = max(self.clock, ts)
            self.suspects = []
        else:
            self.stats["clock_suspect"] += 1
            self.suspects.append(ts)
            if len(self.suspects) == self.confirm:
                self.clock = min(self.suspects)
                self.suspects = []
                self.stats["clock_jumps"] += 1

    def lookup(self, src: Hashable, sport: int, dst: Hashable, dport: int) -> Optional[Conn]:
        return self.conns.get(self.key(src, sport, dst, dport))

    def histogram(self) -> dict[str, int]:
        return dict(zip(self.model.states, self.hist))

    def __len__(self) -> int:
        return len(self.conns)


def _hashable_addresses(values: Any) -> list:
    arr = np.asarray(values)
    if arr.ndim == 2:
        return [row.tobytes() for row in arr]
    return arr.tolist()
