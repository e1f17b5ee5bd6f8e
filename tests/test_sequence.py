"""Sequence-aware tracking: window checks (RST injection), exact FIN acknowledgement and
CLOSING, retransmissions, zero windows, wraparound, window scaling, pickups, against the
reference too."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fasttcp
from fasttcp.models import ACK, FIN, PSH, RST, SYN
from fasttcp.reference import ReferenceTracker
from fasttcp.synth import generate

CLIENT, SERVER = 0x0A000001, 0x0A090909
C_ISN, S_ISN = 1000, 5000


def segments(*rows, wscale=-1):
    """SEGMENT_DTYPE rows from (from_client, flags, seq, ack, length[, window[, wscale]])."""
    out = np.zeros(len(rows), dtype=fasttcp.SEGMENT_DTYPE)
    for i, (client, flags, seq, ack, length, *rest) in enumerate(rows):
        window = rest[0] if rest else 1000
        scale = rest[1] if len(rest) > 1 else (wscale if flags & SYN else -1)
        a, b = (CLIENT, 40000), (SERVER, 80)
        (out["src"][i], out["sport"][i]), (out["dst"][i], out["dport"][i]) = \
            (a, b) if client else (b, a)
        out["ts"][i] = i * 1000
        out["flags"][i], out["seq"][i], out["ack"][i] = flags, seq % 2**32, ack % 2**32
        out["length"][i], out["window"][i], out["wscale"][i] = length, window, scale
    return out


def handshake(c=C_ISN, s=S_ISN, wscale=-1):
    return [(True, SYN, c, 0, 0, 1000, wscale), (False, SYN | ACK, s, c + 1, 0, 1000, wscale),
            (True, ACK, c + 1, s + 1, 0)]


def state(tracker):
    (info,) = [s for s, n in tracker.histogram().items() if n]
    return info


def run(rows, model="rfc793"):
    t = fasttcp.Tracker(model)
    result = t.update(segments(*rows), return_events=True)
    return t, result


def test_a_reset_in_the_window_closes_and_one_outside_is_ignored():
    base = handshake() + [(True, PSH | ACK, C_ISN + 1, S_ISN + 1, 100)]
    for model, closed in (("rfc793", "CLOSED/CLOSED"), ("conntrack", "CLOSE")):
        t, _ = run(base + [(False, RST, S_ISN + 1, 0, 0)], model)
        assert state(t) == closed
        forged = S_ISN + 1 + 10_000_000          # far outside the client's window
        t, res = run(base + [(False, RST, forged, 0, 0)], model)
        assert res.verdict[-1] == fasttcp.INVALID and t.stats["out_of_window"] == 1
        assert state(t) in ("ESTABLISHED/ESTABLISHED", "ESTABLISHED")


def test_a_forged_fin_outside_the_window_does_not_close():
    base = handshake()
    t, res = run(base + [(False, FIN | ACK, S_ISN + 1 + 5_000_000, C_ISN + 1, 0)])
    assert res.verdict[-1] == fasttcp.INVALID and state(t) == "ESTABLISHED/ESTABLISHED"
    t, res = run(base + [(False, FIN | ACK, S_ISN + 1, C_ISN + 1, 0)])
    assert state(t) == "CLOSE_WAIT/FIN_WAIT_1"


def test_a_fin_counts_only_when_acknowledged():
    rows = handshake() + [
        (True, FIN | ACK, C_ISN + 1, S_ISN + 1, 0),            # FIN: ends at C_ISN + 2
        (False, PSH | ACK, S_ISN + 1, C_ISN + 1, 50),          # data sent before the FIN came
    ]
    t, _ = run(rows)
    assert state(t) == "FIN_WAIT_1/CLOSE_WAIT"                # that ACK did not cover it
    t, _ = run(rows + [(False, ACK, S_ISN + 51, C_ISN + 2, 0)])
    assert state(t) == "FIN_WAIT_2/CLOSE_WAIT"                # this one does
    # flags only, the first ACK already counts for the FIN
    t = fasttcp.Tracker()
    t.update(segments(*rows)[list(fasttcp.EVENT_DTYPE.names)])
    assert state(t) == "FIN_WAIT_2/CLOSE_WAIT"


def test_simultaneous_close_goes_through_closing():
    """RFC 793 figure 14: the FINs cross, each side's ACK covers the other's FIN."""
    rows = handshake() + [
        (True, FIN | ACK, C_ISN + 1, S_ISN + 1, 0),
        (False, FIN | ACK, S_ISN + 1, C_ISN + 1, 0),          # does not ack the client's FIN
    ]
    t, _ = run(rows)
    assert state(t) == "CLOSING/CLOSING"
    rows += [(True, ACK, C_ISN + 2, S_ISN + 2, 0)]
    t, _ = run(rows)
    assert state(t) == "CLOSING/TIME_WAIT"
    t, _ = run(rows + [(False, ACK, S_ISN + 2, C_ISN + 2, 0)])
    assert state(t) == "TIME_WAIT/TIME_WAIT"


def test_retransmissions_and_zero_windows_are_counted():
    rows = handshake() + [
        (True, PSH | ACK, C_ISN + 1, S_ISN + 1, 100),
        (True, PSH | ACK, C_ISN + 1, S_ISN + 1, 100),          # the same data again
        (True, FIN | ACK, C_ISN + 101, S_ISN + 1, 0),
        (True, FIN | ACK, C_ISN + 101, S_ISN + 1, 0),          # the FIN again
        (False, ACK, S_ISN + 1, C_ISN + 101, 0, 0),            # a zero window
    ]
    t, res = run(rows)
    assert t.stats["retransmitted"] == 1 and t.stats["zero_window"] == 1
    assert t.stats["out_of_window"] == 0 and state(t) == "FIN_WAIT_1/CLOSE_WAIT"


def test_data_after_the_fin_is_invalid():
    rows = handshake() + [(True, FIN | ACK, C_ISN + 1, S_ISN + 1, 0),
                          (True, PSH | ACK, C_ISN + 2, S_ISN + 1, 10)]
    t, res = run(rows)
    assert res.verdict[-1] == fasttcp.INVALID and t.stats["out_of_window"] == 1


def test_sequence_numbers_wrap_around():
    c = 2**32 - 150                                             # the client's data crosses 0
    rows = handshake(c=c) + [(True, PSH | ACK, c + 1 + k * 100, S_ISN + 1, 100)
                             for k in range(4)]
    rows += [(False, ACK, S_ISN + 1, c + 401, 0),
             (True, FIN | ACK, c + 401, S_ISN + 1, 0), (False, FIN | ACK, S_ISN + 1, c + 402, 0),
             (True, ACK, c + 402, S_ISN + 2, 0)]
    t, res = run(rows)
    assert t.stats["out_of_window"] == 0 and (res.verdict != fasttcp.INVALID).all()
    assert state(t) == "TIME_WAIT/CLOSED"


def test_window_scaling_from_both_syns():
    # the client advertises 1000 << 7 = 128,000 bytes: the server may send that far
    far = S_ISN + 1 + 100_000
    scaled = handshake(wscale=7) + [(False, PSH | ACK, far, C_ISN + 1, 100)]
    t, res = run(scaled)
    assert res.verdict[-1] != fasttcp.INVALID
    # without the option in both SYNs the window is 1,000 bytes: the same segment is out
    t, res = run(handshake() + [(False, PSH | ACK, far, C_ISN + 1, 100)])
    assert res.verdict[-1] == fasttcp.INVALID and t.stats["out_of_window"] == 1


def test_a_pickup_is_liberal_until_both_sides_are_seen():
    rows = [(True, PSH | ACK, 77_000, 9_000_000, 500),          # mid-stream, any numbers
            (False, ACK, 9_000_000, 77_500, 0),
            (True, PSH | ACK, 77_500, 9_000_000, 500)]
    t, res = run(rows, "conntrack")
    assert (res.verdict != fasttcp.INVALID).all() and state(t) == "ESTABLISHED"
    t, res = run(rows + [(False, RST, 9_000_000 + 50_000_000, 0, 0)], "conntrack")
    assert res.verdict[-1] == fasttcp.INVALID                  # then checked like any other


def test_a_tracker_becomes_sequence_aware_with_its_first_sequence_batch():
    t = fasttcp.Tracker()
    rows = segments(*handshake())
    t.update(rows[list(fasttcp.EVENT_DTYPE.names)])
    assert not t._tables[4][0].sequence_aware
    t.update(segments((True, PSH | ACK, C_ISN + 1, S_ISN + 1, 10)))
    assert t._tables[4][0].sequence_aware
    with pytest.raises(TypeError, match="seq, ack and window come together"):
        t.update(rows["ts"], rows["src"], rows["sport"], rows["dst"], rows["dport"],
                 rows["flags"], seq=rows["seq"])
    with pytest.raises(ValueError, match="wscale"):
        t.update(rows["ts"], rows["src"], rows["sport"], rows["dst"], rows["dport"],
                 rows["flags"], seq=rows["seq"], ack=rows["ack"], window=rows["window"],
                 wscale=np.full(3, 20))


def test_generated_traffic_is_all_in_window():
    for model in ("rfc793", "conntrack"):
        t = fasttcp.Tracker(model, capacity=1 << 16)
        for batch in generate(3000, seed=5):
            t.update(batch)
        assert t.stats["out_of_window"] == 0 and t.stats["retransmitted"] > 0


# -- against the reference --------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), model=st.sampled_from(["rfc793", "conntrack"]),
       mutations=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
           ["rst", "dup", "shift", "drop_seq"])), max_size=12),
       shards=st.sampled_from([1, 2]))
def test_sequence_tracking_matches_the_reference(seed, model, mutations, shards):
    """Generated traffic (consistent numbers) with injected RSTs at random sequence numbers,
    duplicated segments, shifted numbers, and a stretch without sequence columns."""
    events = np.concatenate(list(generate(40, seed=seed, rate=1000.0)))
    rng = np.random.default_rng(seed)
    plain_from = len(events)
    for where, kind in mutations:
        k = where % len(events)
        if kind == "rst":
            forged = events[k].copy()
            forged["flags"], forged["seq"] = RST, rng.integers(0, 2**32)
            events = np.insert(events, k + 1, forged)
        elif kind == "dup":
            events = np.insert(events, k + 1, events[k])
        elif kind == "shift":
            events["seq"][k] += rng.integers(1, 2**20)
        else:
            plain_from = min(plain_from, k)
    tracker = fasttcp.Tracker(model, capacity=64, max_capacity=1 << 12, seed=2, shards=shards)
    reference = ReferenceTracker(model, timeouts=tracker.timeouts)
    for part in (events[:plain_from], events[plain_from:]):
        cols = {name: part[name] for name in fasttcp.EVENT_DTYPE.names}
        if part is events[:plain_from]:
            cols.update({name: part[name] for name in ("seq", "ack", "window", "wscale")})
        got = tracker.update(**cols, return_events=True)
        want = reference.update(**cols)
        assert [(int(s), fasttcp.VERDICTS[v]) for s, v in zip(got.state, got.verdict)] == \
            [(s, v) for s, v, _ in want]
    assert tracker.stats == reference.stats
    assert tracker.histogram() == reference.histogram()
    tracker.close()


# -- found in review --------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["rfc793", "conntrack"])
def test_a_new_syn_reopens_after_the_close(model):
    """A new connection on the same 4-tuple has a fresh ISN, far outside the old window: it
    must open the key afresh, not be refused as out of window (RFC 1122 reopening)."""
    close = [(True, FIN | ACK, C_ISN + 1, S_ISN + 1, 0), (False, FIN | ACK, S_ISN + 1, C_ISN + 2, 0),
             (True, ACK, C_ISN + 2, S_ISN + 2, 0)]
    again = handshake(c=C_ISN + 3_000_000_000, s=S_ISN + 1_000_000_000)
    t, res = run(handshake() + close + again, model)
    assert (res.verdict[-3:] != fasttcp.INVALID).all() and t.stats["out_of_window"] == 0
    assert state(t) in ("ESTABLISHED/ESTABLISHED", "ESTABLISHED")


def test_a_missed_syn_leaves_window_scaling_unknown():
    """The capture starts with the SYN-ACK (a flip): whether the client offered scaling is
    unknown, so the server's scaled windows are taken liberally."""
    rows = [(False, SYN | ACK, S_ISN, C_ISN + 1, 0, 65535, 7), (True, ACK, C_ISN + 1, S_ISN + 1, 0),
            (False, ACK, S_ISN + 1, C_ISN + 1, 0, 1000)]            # 1000 << 7 bytes
    rows += [(True, PSH | ACK, C_ISN + 1 + k * 10_000, S_ISN + 1, 10_000) for k in range(12)]
    t, res = run(rows)
    assert t.stats["out_of_window"] == 0


def test_a_fin_again_in_closing_stays_closing():
    rows = handshake() + [(True, FIN | ACK, C_ISN + 1, S_ISN + 1, 0),
                          (False, FIN | ACK, S_ISN + 1, C_ISN + 1, 0),
                          (True, FIN | ACK, C_ISN + 1, S_ISN + 1, 0)]   # resent, acks nothing new
    t, _ = run(rows)
    assert state(t) == "CLOSING/CLOSING"
