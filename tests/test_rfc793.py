"""The rfc793 model on segment sequences, each with the RFC 793 outcome it must reach.

States read ORIGINATOR/RESPONDER. Where the observer has to infer (flags only), the expected
states follow the inferences documented in fasttcp.models.rfc793.
"""
import numpy as np
import pytest
from helpers import run

from fasttcp import Tracker
from fasttcp.models import ACK, FIN, PSH, RST, SYN, URG

SYNACK, FINACK, RSTACK, PSHACK = SYN | ACK, FIN | ACK, RST | ACK, PSH | ACK
HANDSHAKE = [("c", SYN), ("s", SYNACK), ("c", ACK)]


def rfc(steps, tracker=None, **kw):
    return run(steps, tracker=tracker, model="rfc793", **kw)


def info(t):
    return t.lookup("10.0.0.1", 40000, "10.0.0.2", 80)


def test_three_way_handshake():
    t, states, verdicts = rfc(HANDSHAKE)
    assert states == ["SYN_SENT/LISTEN", "SYN_SENT/SYN_RCVD", "ESTABLISHED/ESTABLISHED"]
    assert verdicts == ["new", "valid", "valid"]
    conn = info(t)
    assert not conn.flipped and not conn.picked_up and conn.replied


def test_active_close_by_the_originator():
    _, states, _ = rfc(HANDSHAKE + [("c", FINACK), ("s", ACK), ("s", FINACK), ("c", ACK)])
    assert states[3:] == ["FIN_WAIT_1/CLOSE_WAIT", "FIN_WAIT_2/CLOSE_WAIT",
                          "TIME_WAIT/LAST_ACK", "TIME_WAIT/CLOSED"]


def test_active_close_by_the_responder():
    _, states, _ = rfc(HANDSHAKE + [("s", FINACK), ("c", ACK), ("c", FINACK), ("s", ACK)])
    assert states[3:] == ["CLOSE_WAIT/FIN_WAIT_1", "CLOSE_WAIT/FIN_WAIT_2",
                          "LAST_ACK/TIME_WAIT", "CLOSED/TIME_WAIT"]


def test_three_segment_close_fin_answered_by_fin_ack():
    _, states, _ = rfc(HANDSHAKE + [("c", FINACK), ("s", FINACK), ("c", ACK)])
    assert states[3:] == ["FIN_WAIT_1/CLOSE_WAIT", "TIME_WAIT/LAST_ACK", "TIME_WAIT/CLOSED"]


@pytest.mark.parametrize("first", ["c", "s"])
def test_simultaneous_open(first):
    # RFC 793 figure 8: the SYNs cross and reach both ends (SYN_RCVD on both); each SYN-ACK
    # then establishes its receiver, whichever comes first.
    second = "s" if first == "c" else "c"
    t, states, verdicts = rfc([("c", SYN), ("s", SYN), (first, SYNACK), (second, SYNACK),
                               ("s", PSHACK, 10), ("c", PSHACK, 10)])
    middle = "SYN_RCVD/ESTABLISHED" if first == "c" else "ESTABLISHED/SYN_RCVD"
    assert states == ["SYN_SENT/LISTEN", "SYN_RCVD/SYN_RCVD", middle] + \
        ["ESTABLISHED/ESTABLISHED"] * 3
    assert verdicts == ["new"] + ["valid"] * 5
    orig = [s.split("/")[0] for s in states]
    assert orig[:2] == ["SYN_SENT", "SYN_RCVD"] and orig[-1] == "ESTABLISHED"


def test_fin_in_syn_rcvd_half_of_a_simultaneous_open():
    _, states, verdicts = rfc([("c", SYN), ("s", SYN), ("s", SYNACK), ("c", FINACK), ("s", ACK)])
    assert states[-2:] == ["FIN_WAIT_1/CLOSE_WAIT", "FIN_WAIT_2/CLOSE_WAIT"]
    assert "invalid" not in verdicts


def test_retransmitted_last_fin_after_the_final_ack():
    # the final ACK was lost after the observer saw it: the peer sends its FIN again
    closed = HANDSHAKE + [("c", FINACK), ("s", ACK), ("s", FINACK), ("c", ACK)]
    _, states, verdicts = rfc(closed + [("s", FINACK), ("c", ACK)])
    assert states[-3:] == ["TIME_WAIT/CLOSED", "TIME_WAIT/LAST_ACK", "TIME_WAIT/CLOSED"]
    assert verdicts[-2:] == ["valid", "valid"]


def test_late_segments_after_a_reset_are_ignored():
    t, states, verdicts = rfc(HANDSHAKE + [("s", RST), ("c", PSHACK, 5), ("s", ACK),
                                           ("c", FINACK)])
    assert states[-4:] == ["CLOSED/CLOSED"] * 4
    assert verdicts[-3:] == ["ignored"] * 3
    conn = info(t)
    assert not conn.picked_up and conn.orig_h == "10.0.0.1" and t.stats["closed"] == 0


def test_simultaneous_close_flags_only():
    # RFC 793 figure 14: FINs cross, then both ends acknowledge. Flags only, the second FIN's
    # ACK is taken to cover the first FIN; the responder's final ACK then shows it was CLOSING.
    _, states, verdicts = rfc(HANDSHAKE + [("c", FINACK), ("s", FINACK), ("c", ACK), ("s", ACK)])
    assert states[3:] == ["FIN_WAIT_1/CLOSE_WAIT", "TIME_WAIT/LAST_ACK", "TIME_WAIT/CLOSED",
                          "TIME_WAIT/TIME_WAIT"]
    assert "invalid" not in verdicts


def test_half_close_with_data_still_flowing():
    t, states, verdicts = rfc(HANDSHAKE + [("c", FINACK), ("s", ACK), ("s", PSHACK, 500),
                                           ("c", ACK), ("s", PSHACK, 700), ("c", ACK),
                                           ("s", FINACK), ("c", ACK)])
    assert states[4:8] == ["FIN_WAIT_2/CLOSE_WAIT"] * 4
    assert states[-1] == "TIME_WAIT/CLOSED" and "invalid" not in verdicts
    assert info(t).resp_bytes == 1200


PREFIXES = {
    "SYN_SENT/LISTEN": [("c", SYN)],
    "SYN_SENT/SYN_RCVD": [("c", SYN), ("s", SYNACK)],
    "ESTABLISHED/ESTABLISHED": HANDSHAKE,
    "FIN_WAIT_1/CLOSE_WAIT": HANDSHAKE + [("c", FINACK)],
    "FIN_WAIT_2/CLOSE_WAIT": HANDSHAKE + [("c", FINACK), ("s", ACK)],
    "TIME_WAIT/LAST_ACK": HANDSHAKE + [("c", FINACK), ("s", ACK), ("s", FINACK)],
    "TIME_WAIT/CLOSED": HANDSHAKE + [("c", FINACK), ("s", ACK), ("s", FINACK), ("c", ACK)],
    "SYN_RCVD/SYN_RCVD": [("c", SYN), ("s", SYN)],
    "ESTABLISHED/SYN_RCVD": [("c", SYN), ("s", SYN), ("s", SYNACK)],
    "CLOSE_WAIT/FIN_WAIT_1": HANDSHAKE + [("s", FINACK)],
}


@pytest.mark.parametrize("state", list(PREFIXES))
@pytest.mark.parametrize("sender", ["c", "s"])
@pytest.mark.parametrize("flags", [RST, RSTACK])
def test_rst_in_every_state_closes_both_ends(state, sender, flags):
    t, states, verdicts = rfc(PREFIXES[state] + [(sender, flags)])
    assert states[-2] == state
    assert (states[-1], verdicts[-1]) == ("CLOSED/CLOSED", "valid")
    assert t.histogram(by="orig")["CLOSED"] == 1


def test_syn_to_a_closed_port_answered_by_rst():
    t, states, _ = rfc([("c", SYN), ("s", RSTACK)])
    assert states == ["SYN_SENT/LISTEN", "CLOSED/CLOSED"]
    assert len(t) == 1 and info(t).replied  # kept, unlike conntrack: Zeek reports it as REJ


def test_retransmitted_syn_and_syn_ack():
    _, states, verdicts = rfc([("c", SYN), ("c", SYN), ("s", SYNACK), ("s", SYNACK), ("c", ACK)])
    assert states == ["SYN_SENT/LISTEN", "SYN_SENT/LISTEN", "SYN_SENT/SYN_RCVD",
                      "SYN_SENT/SYN_RCVD", "ESTABLISHED/ESTABLISHED"]
    assert verdicts == ["new", "valid", "valid", "valid", "valid"]


def test_mid_stream_pickup():
    t, states, verdicts = rfc([("c", PSHACK, 100), ("s", ACK)])
    assert states == ["ESTABLISHED/ESTABLISHED"] * 2 and verdicts == ["new", "valid"]
    conn = info(t)
    assert conn.picked_up and not conn.flipped and conn.orig_h == "10.0.0.1"


def test_first_segment_syn_ack_flips_the_roles():
    # Zeek: when the SYN was missed, the SYN-ACK's receiver is the originator
    t, states, verdicts = rfc([("s", SYNACK), ("c", ACK)])
    assert states == ["SYN_SENT/SYN_RCVD", "ESTABLISHED/ESTABLISHED"]
    conn = info(t)
    assert conn.flipped and conn.orig_h == "10.0.0.1" and conn.resp_h == "10.0.0.2"
    assert (conn.orig_pkts, conn.resp_pkts) == (1, 1) and conn.direction == "orig"


def test_syn_inside_a_connection_is_ignored_and_a_syn_after_close_reopens():
    t, states, verdicts = rfc(HANDSHAKE + [("c", SYN)])
    assert (states[-1], verdicts[-1]) == ("ESTABLISHED/ESTABLISHED", "ignored")
    closed = PREFIXES["TIME_WAIT/CLOSED"]
    t, states, verdicts = rfc(closed + [("s", SYN)])
    assert (states[-1], verdicts[-1]) == ("SYN_SENT/LISTEN", "new")
    assert info(t).orig_h == "10.0.0.2" and t.stats["closed"] == 1


@pytest.mark.parametrize("sender, orig", [("c", "10.0.0.1"), ("s", "10.0.0.2")])
def test_lone_rst_is_recorded_and_a_syn_reopens(sender, orig):
    t, states, verdicts = rfc([("c", RST)])
    assert (states, verdicts, len(t)) == (["CLOSED/CLOSED"], ["new"], 1)
    t, states, verdicts = rfc([("c", ACK), (sender, SYN)], tracker=t)
    assert (states, verdicts) == (["CLOSED/CLOSED", "SYN_SENT/LISTEN"], ["ignored", "new"])
    assert info(t).orig_h == orig and info(t).orig_pkts == 1


@pytest.mark.parametrize("flags", [0, FIN, FIN | PSH | URG, SYN | FIN, SYN | RST, 0xFF])
def test_illegal_flags_are_counted_and_change_nothing(flags):
    t, states, verdicts = rfc([("c", flags)])
    assert (verdicts, len(t)) == (["invalid"], 0)
    t, states, verdicts = rfc(HANDSHAKE + [("c", flags), ("c", flags)])
    assert verdicts[-2:] == ["invalid", "invalid"]
    assert states[-1] == "ESTABLISHED/ESTABLISHED" and info(t).illegal == 2
    counts = t.flag_class_counts()
    assert sum(counts[c] for c in t.model.illegal_classes) == 2 and counts["SYN"] == 1


def test_illegal_count_saturates():
    t, _, _ = rfc(HANDSHAKE + [("c", 0)] * 20)
    assert info(t).illegal == 15 and t.flag_class_counts()["NULL"] == 20


def test_histograms_by_endpoint():
    t = Tracker(capacity=16, seed=2)
    rfc(HANDSHAKE, tracker=t)
    rfc([("c", SYN)], tracker=t, client=("10.0.0.9", 1))
    rfc(PREFIXES["FIN_WAIT_2/CLOSE_WAIT"], tracker=t, client=("10.0.0.8", 2))
    orig, resp = t.histogram(by="orig"), t.histogram(by="resp")
    assert (orig["ESTABLISHED"], orig["SYN_SENT"], orig["FIN_WAIT_2"]) == (1, 1, 1)
    assert (resp["ESTABLISHED"], resp["LISTEN"], resp["CLOSE_WAIT"]) == (1, 1, 1)
    assert sum(orig.values()) == sum(resp.values()) == len(t) == 3
    with pytest.raises(ValueError, match="no endpoint states"):
        Tracker("conntrack").histogram(by="orig")
    with pytest.raises(ValueError, match="by must be"):
        t.histogram(by="side")


def test_timeouts_documented_and_overridable():
    t = Tracker()
    assert t.timeouts["TIME_WAIT/CLOSED"] == 240            # 2 MSL
    assert t.timeouts["ESTABLISHED/ESTABLISHED"] == 432000  # conntrack's 5 days
    assert t.timeouts["CLOSED/CLOSED"] == 10
    t = Tracker(timeouts={"TIME_WAIT": 60, "SYN_SENT/LISTEN": 5})
    assert t.timeouts["TIME_WAIT/CLOSED"] == 60 and t.timeouts["TIME_WAIT/TIME_WAIT"] == 60
    assert t.timeouts["ESTABLISHED/TIME_WAIT"] == 432000 and t.timeouts["SYN_SENT/LISTEN"] == 5
    assert Tracker("conntrack", timeouts={"ESTABLISHED": 3600}).timeouts["ESTABLISHED"] == 3600
    with pytest.raises(ValueError, match="no state 'NOPE'"):
        Tracker(timeouts={"NOPE": 1})
    for bad in (-1, 1e10, float("nan")):
        with pytest.raises(ValueError, match="seconds from 0 to .* or math.inf"):
            Tracker(timeouts={"TIME_WAIT": bad})


def test_rfc793_is_the_default_and_complete():
    t = Tracker()
    assert t.model.name == "rfc793" and len(t.model.states) == 122  # 11 x 11 pairs and NONE
    table = t.model.table
    assert ((table < 122) | (table >= 254)).all()
    assert not (table[1:] == 0).any()  # no connection goes back to NONE
    assert np.array_equal(t.model.pairs[t.model.state_code("SYN_SENT/LISTEN")], [2, 1])
