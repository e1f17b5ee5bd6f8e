"""The conntrack model on segment sequences whose netfilter outcome is known.

Each expectation cites the netfilter behaviour it follows (net/netfilter/nf_conntrack_proto_tcp.c:
the tcp_conntracks table, tcp_new, tcp_error and nf_conntrack_tcp_packet).
"""
import pytest
from helpers import CLIENT6, SERVER6, run

from fasttcp import Tracker
from fasttcp.models import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, conntrack

SYNACK, FINACK, RSTACK, PSHACK = SYN | ACK, FIN | ACK, RST | ACK, PSH | ACK


def test_three_way_handshake_data_and_active_close_by_client():
    t, states, verdicts = run([("c", SYN), ("s", SYNACK), ("c", ACK), ("c", PSHACK, 100),
                               ("s", PSHACK, 300), ("c", FINACK), ("s", ACK), ("s", FINACK),
                               ("c", ACK)])
    assert states == ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "ESTABLISHED", "ESTABLISHED",
                      "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT"]
    assert verdicts == ["new"] + ["valid"] * 8
    info = t.lookup("10.0.0.1", 40000, "10.0.0.2", 80)
    assert (info.orig_h, info.orig_p, info.resp_h, info.resp_p) == ("10.0.0.1", 40000,
                                                                    "10.0.0.2", 80)
    assert (info.orig_pkts, info.resp_pkts, info.orig_bytes, info.resp_bytes) == (5, 4, 100, 300)
    assert info.orig_flags == SYN | ACK | PSH | FIN and info.resp_flags == SYN | ACK | PSH | FIN
    assert info.replied and t.histogram()["TIME_WAIT"] == 1


def test_close_started_by_server():
    _, states, _ = run([("c", SYN), ("s", SYNACK), ("c", ACK), ("s", FINACK), ("c", ACK),
                        ("c", FINACK), ("s", ACK)])
    assert states[3:] == ["FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT"]


def test_rejected_connection_is_dropped_at_once():
    # SYN answered only by RST: "If only reply is a RST ... delete the conntrack immediately".
    t, states, verdicts = run([("c", SYN), ("s", RSTACK)])
    assert states == ["SYN_SENT", "CLOSE"] and verdicts == ["new", "valid"]
    assert len(t) == 0 and t.stats["closed"] == 1
    # the retransmitted SYN then finds no entry and starts a new one
    _, states, verdicts = run([("c", SYN)], tracker=t)
    assert (states, verdicts) == (["SYN_SENT"], ["new"])


def test_rst_after_reply_keeps_the_entry_in_close():
    t, states, _ = run([("c", SYN), ("s", SYNACK), ("c", ACK), ("s", RST)])
    assert states[-1] == "CLOSE" and len(t) == 1 and t.histogram()["CLOSE"] == 1


def test_client_rst_before_any_reply_drops_the_entry():
    t, states, _ = run([("c", SYN), ("c", RST)])
    assert states == ["SYN_SENT", "CLOSE"] and len(t) == 0


def test_simultaneous_open():
    # SYN both ways (SYN_SENT2), SYN-ACKs both ways, then the reply ACK completes: the kernel
    # reaches ESTABLISHED through its IP_CT_TCP_SIMULTANEOUS_OPEN flag in SYN_RECV.
    _, states, verdicts = run([("c", SYN), ("s", SYN), ("c", SYNACK), ("s", SYNACK), ("s", ACK)])
    assert states == ["SYN_SENT", "SYN_SENT2", "SYN_RECV2", "SYN_RECV2", "ESTABLISHED"]
    assert verdicts == ["new", "valid", "valid", "ignored", "valid"]


def test_reply_ack_in_plain_syn_recv_does_not_establish():
    _, states, _ = run([("c", SYN), ("s", SYNACK), ("s", ACK)])
    assert states[-1] == "SYN_RECV"


def test_retransmissions_keep_state():
    _, states, verdicts = run([("c", SYN), ("c", SYN), ("s", SYNACK), ("s", SYNACK)])
    assert states == ["SYN_SENT", "SYN_SENT", "SYN_RECV", "SYN_RECV"]
    assert verdicts == ["new", "valid", "valid", "ignored"]


@pytest.mark.parametrize("loose, expect", [(True, ("ESTABLISHED", "new")),
                                           (False, ("NONE", "invalid"))])
def test_mid_stream_pickup_follows_loose(loose, expect):
    t = Tracker(conntrack(loose=loose), capacity=8, seed=1)
    t, states, verdicts = run([("c", PSHACK, 10)], tracker=t)
    assert (states[0], verdicts[0]) == expect
    assert len(t) == (1 if loose else 0)


@pytest.mark.parametrize("flags", [FINACK, RST, RSTACK, SYNACK])
def test_segments_that_cannot_open_a_connection_create_nothing(flags):
    # tcp_new: tcp_conntracks[0][index][NONE] is invalid for FIN, RST and SYN-ACK.
    t, states, verdicts = run([("c", flags)])
    assert (states, verdicts, len(t)) == (["NONE"], ["invalid"], 0)
    assert t.stats["untracked"] == 1


@pytest.mark.parametrize("flags", [0, FIN, FIN | PSH | URG, SYN | FIN, SYN | RST, URG, PSH,
                                   SYN | ACK | URG, RST | FIN, 0xFF])
def test_illegal_flag_combinations_are_invalid_everywhere(flags):
    # tcp_error rejects them before the state machine: no entry is created, none changes.
    t, states, verdicts = run([("c", flags)])
    assert (verdicts, len(t)) == (["invalid"], 0)
    t, states, verdicts = run([("c", SYN), ("s", SYNACK), ("c", ACK), ("c", flags)])
    assert verdicts[-1] == "invalid" and states[-1] == "ESTABLISHED"


@pytest.mark.parametrize("flags", [SYN | ECE | CWR, SYN | PSH, SYN | URG, ACK | URG,
                                   FIN | ACK | URG, RST | ACK | PSH])
def test_flags_linux_accepts(flags):
    _, _, verdicts = run([("c", SYN), ("s", SYNACK), ("c", ACK), ("c", flags)])
    assert verdicts[-1] != "invalid"


def test_syn_inside_an_established_connection_is_ignored():
    _, states, verdicts = run([("c", SYN), ("s", SYNACK), ("c", ACK), ("c", SYN)])
    assert (states[-1], verdicts[-1]) == ("ESTABLISHED", "ignored")


def test_ack_before_synack_is_invalid_from_client_ignored_from_server():
    _, states, verdicts = run([("c", SYN), ("c", ACK), ("s", ACK)])
    assert states == ["SYN_SENT"] * 3 and verdicts == ["new", "invalid", "ignored"]


def test_ignored_reply_counts_as_a_reply():
    # The reply ACK is accepted (ignored), so the kernel sets SEEN_REPLY; a RST then keeps the
    # entry (CLOSE) instead of dropping it.
    t, states, _ = run([("c", SYN), ("s", ACK), ("s", RST)])
    assert states[-1] == "CLOSE" and len(t) == 1


def test_syn_in_time_wait_reopens_with_fresh_counters():
    close = [("c", SYN), ("s", SYNACK), ("c", ACK, 50), ("c", FINACK), ("s", ACK),
             ("s", FINACK), ("c", ACK)]
    t, states, verdicts = run(close + [("c", SYN)])
    assert (states[-1], verdicts[-1]) == ("SYN_SENT", "new")
    info = t.lookup("10.0.0.1", 40000, "10.0.0.2", 80)
    assert (info.orig_pkts, info.resp_pkts, info.orig_bytes, info.orig_h) == (1, 0, 0, "10.0.0.1")
    assert t.stats["closed"] == 1 and len(t) == 1


def test_server_syn_in_time_wait_reopens_with_roles_switched():
    close = [("c", SYN), ("s", SYNACK), ("c", ACK), ("c", FINACK), ("s", ACK), ("s", FINACK),
             ("c", ACK)]
    t, states, verdicts = run(close + [("s", SYN)])
    assert (states[-1], verdicts[-1]) == ("SYN_SENT", "new")
    assert t.lookup("10.0.0.1", 40000, "10.0.0.2", 80).orig_h == "10.0.0.2"


def test_fin_before_synack_is_invalid():
    _, states, verdicts = run([("c", SYN), ("c", FINACK)])
    assert (states[-1], verdicts[-1]) == ("SYN_SENT", "invalid")


def test_ipv6_handshake():
    t, states, _ = run([("c", SYN), ("s", SYNACK), ("c", ACK)], client=CLIENT6, server=SERVER6)
    assert states[-1] == "ESTABLISHED"
    info = t.lookup("2001:db8::2", 443, "2001:db8::1", 40000)
    assert info.family == 6 and info.orig_h == "2001:db8::1" and info.direction == "resp"


def test_timeouts_are_netfilters_defaults():
    timeouts = conntrack().timeouts
    assert timeouts["ESTABLISHED"] == 432000 and timeouts["SYN_SENT"] == 120
    assert timeouts["CLOSE"] == 10 and timeouts["TIME_WAIT"] == 120
