"""The synthetic traffic generator: scenarios, sequence numbers, order, pcap output."""
import gzip
import struct
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fasttcp.synth
from fasttcp import SEGMENT_DTYPE, Tracker
from fasttcp.models import ACK, FIN, PSH, RST, SYN, URG
from fasttcp.synth import KINDS, SCANNED_PORTS, SYN_FLOOD_BURST, SYN_FLOOD_VICTIM, generate, \
    write_pcap

SYNACK, FINACK, RSTACK = SYN | ACK, FIN | ACK, RST | ACK
HANDSHAKE = [("o", SYN), ("r", SYNACK), ("o", ACK)]
CLOSE = [("o", FINACK), ("r", ACK), ("r", FINACK), ("o", ACK)]


def events(connections, **kw):
    return np.concatenate(list(generate(connections, **kw)))


def flows(ev):
    """Segments per 4-tuple, in order, each as a dict with ``side`` 'o' (first sender) or 'r'."""
    out = defaultdict(list)
    for e in ev.tolist():
        row = dict(zip(SEGMENT_DTYPE.names, e))
        a, b = (row["src"], row["sport"]), (row["dst"], row["dport"])
        key = (a, b) if (b, a) not in out else (b, a)
        row["side"] = "o" if key[0] == a else "r"
        out[key].append(row)
    return out


def steps(flow):
    return [(s["side"], s["flags"]) for s in flow]


def consumed(seg):
    return seg["length"] + bool(seg["flags"] & SYN) + bool(seg["flags"] & FIN)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_has_its_flag_sequence(kind):
    per_flow = list(flows(events(300, seed=2, mix={kind: 1.0})).values())
    sequences = [steps(f) for f in per_flow]
    if kind in ("normal", "retransmission"):
        assert all(s[:3] == HANDSHAKE and s[-4:] == CLOSE for s in sequences)
    elif kind == "reset":
        assert all(s[:3] == HANDSHAKE and s[-1][1] == RSTACK for s in sequences)
        assert {s[-1][0] for s in sequences} == {"o", "r"}  # either side resets
    elif kind == "rejected":
        assert all(s == [("o", SYN), ("r", RSTACK)] for s in sequences)
    elif kind == "unanswered":
        assert {len(s) for s in sequences} == {1, 2, 3}
        assert all(set(s) == {("o", SYN)} for s in sequences)
        gaps = {tuple(np.diff([x["ts"] for x in f]) // 10**9) for f in per_flow}
        assert gaps == {(), (1,), (1, 2)}  # retransmitted after 1 s, then 2 s more
    elif kind == "simultaneous_open":
        assert all(s[:6] == [("o", SYN), ("r", SYN), ("o", SYNACK), ("r", SYNACK), ("o", ACK),
                             ("r", ACK)] and s[-4:] == CLOSE for s in sequences)
    elif kind == "simultaneous_close":
        assert all(s[:3] == HANDSHAKE and s[-4:] == [("o", FINACK), ("r", FINACK), ("o", ACK),
                                                     ("r", ACK)] for s in sequences)
    elif kind == "midstream":
        assert all(not any(f & (SYN | FIN | RST) for _, f in s) and s[0][1] & ACK
                   for s in sequences)
    elif kind == "syn_flood":
        assert len(per_flow) == 300 * SYN_FLOOD_BURST
        assert all(s == [("o", SYN)] for s in sequences)
        assert {(f[0]["dst"], f[0]["dport"]) for f in per_flow} == {SYN_FLOOD_VICTIM}
        sources = {f[0]["src"] for f in per_flow}
        assert len(sources) == len(per_flow) and not any(a >> 24 == 10 for a in sources)
    else:
        assert kind == "scan"
        check_scans(per_flow)
    if kind == "retransmission":  # some data segment goes twice with the same seq
        assert all(has_repeated_data(f) for f in per_flow)
    else:
        assert not any(has_repeated_data(f) for f in per_flow)


def has_repeated_data(flow):
    sent = [(s["side"], s["seq"], s["length"]) for s in flow if s["length"]]
    return len(set(sent)) < len(sent)


def check_scans(per_flow):
    scanners = defaultdict(list)
    for f in per_flow:
        scanners[f[0]["src"], f[0]["sport"]].append(f)
    probes = set()
    for scan in scanners.values():
        assert len({f[0]["dst"] for f in scan}) == 1  # one host
        assert sorted(f[0]["dport"] for f in scan) == sorted(SCANNED_PORTS.tolist())
        assert len({f[0]["flags"] for f in scan}) == 1  # one probe type per scan
        for f in scan:
            probe, is_open = f[0]["flags"], f[0]["dport"] in (22, 80, 443)
            probes.add(probe)
            if probe == SYN:
                expected = [("o", SYN), ("r", SYNACK), ("o", RST)] if is_open \
                    else [("o", SYN), ("r", RSTACK)]
            else:
                expected = [("o", probe)] if is_open else [("o", probe), ("r", RSTACK)]
            assert steps(f) == expected
    assert probes == {SYN, FIN, 0, FIN | PSH | URG}


def test_sequence_and_acknowledgement_numbers():
    """Per side, seq advances by what each segment consumes (retransmissions repeat a seq);
    an ACK acknowledges the peer's next seq as of some earlier point, never beyond."""
    for flow in flows(events(1500, seed=4)).values():
        next_seq = {}                 # side -> next seq after its last fresh segment
        seqs = defaultdict(set)       # side -> seqs it has sent
        acceptable = defaultdict(set)  # side -> the values an ACK of its data may take
        for seg in flow:
            side, peer = seg["side"], "r" if seg["side"] == "o" else "o"
            if side in next_seq and seg["seq"] != next_seq[side]:
                assert seg["seq"] in seqs[side]  # a retransmission
            else:
                next_seq[side] = (seg["seq"] + consumed(seg)) % 2**32
                acceptable[side].add(next_seq[side])
            seqs[side].add(seg["seq"])
            if not seg["flags"] & ACK:
                assert seg["ack"] == 0
            elif peer in next_seq:
                assert seg["ack"] in acceptable[peer]


def test_handshake_and_close_numbers():
    for flow in flows(events(200, seed=5, mix={"normal": 1.0})).values():
        syn, synack, ack = flow[:3]
        assert synack["ack"] == (syn["seq"] + 1) % 2**32
        assert (ack["seq"], ack["ack"]) == ((syn["seq"] + 1) % 2**32, (synack["seq"] + 1) % 2**32)
        assert syn["wscale"] == synack["wscale"] == 7 and ack["wscale"] == -1
        assert (syn["window"], synack["window"]) == (64240, 65160)
        fin, fin_ack, fin2, last = flow[-4:]
        assert fin_ack["ack"] == last["seq"] == (fin["seq"] + 1) % 2**32
        assert last["ack"] == (fin2["seq"] + 1) % 2**32


def test_rejected_and_simultaneous_close_numbers():
    for syn, rst in flows(events(100, seed=6, mix={"rejected": 1.0})).values():
        # a closed port has no sequence space: seq 0, acknowledging the SYN
        assert rst["seq"] == 0 and rst["ack"] == (syn["seq"] + 1) % 2**32
        assert rst["window"] == 0
    for flow in flows(events(100, seed=6, mix={"simultaneous_close": 1.0})).values():
        fin_o, fin_r, ack_o, ack_r = flow[-4:]
        assert fin_r["ack"] == fin_o["seq"]  # the FINs cross: neither acknowledges the other
        assert ack_o["ack"] == (fin_r["seq"] + 1) % 2**32
        assert ack_r["ack"] == (fin_o["seq"] + 1) % 2**32


@settings(max_examples=15, deadline=None)
@given(connections=st.integers(0, 20_000), batch_size=st.integers(1, 50_000),
       rate=st.sampled_from([1.0, 1_000.0, 100_000.0]), seed=st.integers(0, 2**32))
def test_batches_are_bounded_and_time_ordered(connections, batch_size, rate, seed):
    batches = list(generate(connections, seed=seed, rate=rate, batch_size=batch_size))
    assert all(len(b) == batch_size for b in batches[:-1])
    assert all(0 < len(b) <= batch_size and b.dtype == SEGMENT_DTYPE for b in batches)
    ts = np.concatenate([b["ts"] for b in batches]) if batches else np.zeros(0)
    assert np.all(np.diff(ts) >= 0)


def test_batch_size_only_cuts_the_stream():
    a = events(5000, seed=9, batch_size=65_536)
    b = events(5000, seed=9, batch_size=777)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != events(5000, seed=10).tobytes()


def test_event_counts():
    assert len(events(1234, mix={"rejected": 1.0})) == 2 * 1234
    assert len(events(50, mix={"syn_flood": 1.0})) == 50 * SYN_FLOOD_BURST
    assert list(generate(0)) == []


def test_arrivals_are_poisson_at_rate():
    ev = events(20_000, seed=1, mix={"rejected": 1.0}, rate=5_000.0, start=10**9)
    arrivals = np.sort(ev["ts"][ev["flags"] == SYN])
    assert arrivals[0] == 10**9
    gaps = np.diff(arrivals) / 1e9
    assert gaps.mean() == pytest.approx(1 / 5_000, rel=0.05)
    assert gaps.std() == pytest.approx(1 / 5_000, rel=0.05)  # exponential: std = mean


def test_no_two_connections_share_a_key():
    assert len(flows(events(30_000, seed=3, mix={"rejected": 1.0}))) == 30_000
    # two connections on one 4-tuple would show as SYNs with different seqs in one flow
    per_flow = flows(events(8_000, seed=3)).values()
    for flow in per_flow:
        assert len({s["seq"] for s in flow if s["flags"] == SYN and s["side"] == "o"}) <= 1
    clients = [f[0] for f in per_flow if f[0]["dst"] != SYN_FLOOD_VICTIM[0]]
    assert all(c["src"] >> 24 == 10 and 32768 <= c["sport"] <= 60999 for c in clients)


@pytest.mark.parametrize("mix, message", [
    ({"normal": 1.0, "teleport": 1.0}, "unknown scenario kinds"),
    ({"normal": 0.0}, "must be a finite number > 0"),
    ({"normal": -1.0}, "must be a finite number > 0"),
    ({"normal": float("nan")}, "must be a finite number > 0"),
    ({}, "non-empty mapping"),
])
def test_bad_mix(mix, message):
    with pytest.raises(ValueError, match=message):
        generate(10, mix=mix)


@pytest.mark.parametrize("kw, message", [
    (dict(connections=-1), "connections must be an integer >= 0"),
    (dict(connections=1.5), "connections must be an integer >= 0"),
    (dict(connections=1, rate=0.0), "rate must be"),
    (dict(connections=1, rate=float("inf")), "rate must be"),
    (dict(connections=1, batch_size=0), "batch_size must be an integer >= 1"),
    (dict(connections=1, start=-5), "start must be an integer >= 0"),
    (dict(connections=1, seed=-1), "seed must be an integer >= 0"),
])
def test_bad_arguments_raise_before_iteration(kw, message):
    with pytest.raises(ValueError, match=message):
        generate(**kw)


# The state each kind leaves its flows in, under conntrack and rfc793; None: no live record
# (conntrack drops an entry whose only reply is a RST).
END_STATES = {
    "normal": ("TIME_WAIT", "TIME_WAIT/CLOSED"),
    "retransmission": ("TIME_WAIT", "TIME_WAIT/CLOSED"),
    "simultaneous_open": ("TIME_WAIT", "TIME_WAIT/CLOSED"),
    "simultaneous_close": ("TIME_WAIT", "TIME_WAIT/TIME_WAIT"),
    "reset": ("CLOSE", "CLOSED/CLOSED"),
    "rejected": (None, "CLOSED/CLOSED"),
    "unanswered": ("SYN_SENT", "SYN_SENT/LISTEN"),
    "syn_flood": ("SYN_SENT", "SYN_SENT/LISTEN"),
    "midstream": ("ESTABLISHED", "ESTABLISHED/ESTABLISHED"),
}


@pytest.mark.parametrize("kind", sorted(END_STATES))
@pytest.mark.parametrize("model", ["conntrack", "rfc793"])
def test_trackers_reach_the_expected_end_states(kind, model):
    tracker = Tracker(model, capacity=1 << 16, seed=1)
    invalid = sum(tracker.update(b).invalid for b in generate(500, seed=8, mix={kind: 1.0},
                                                              batch_size=1000))
    assert invalid == 0
    flows_made = 500 * (SYN_FLOOD_BURST if kind == "syn_flood" else 1)
    expected = END_STATES[kind][model == "rfc793"]
    histogram = tracker.histogram()
    if expected is None:
        assert len(tracker) == 0
    else:
        assert histogram[expected] == len(tracker) == flows_made


@pytest.mark.parametrize("model", ["conntrack", "rfc793"])
def test_trackers_take_the_default_mix(model):
    tracker = Tracker(model, capacity=1 << 16, seed=1)
    for batch in generate(3000, seed=1):
        tracker.update(batch)
    closed = "TIME_WAIT" if model == "conntrack" else "TIME_WAIT/CLOSED"
    assert tracker.histogram()[closed] > 0.6 * 3000


def read_pcap(data):
    """(global header fields, [(ts_sec, ts_frac, caplen, orig_len, frame bytes)])."""
    header = struct.unpack("<IHHiIII", data[:24])
    records, at = [], 24
    while at < len(data):
        sec, frac, caplen, orig_len = struct.unpack("<IIII", data[at:at + 16])
        records.append((sec, frac, caplen, orig_len, data[at + 16:at + 16 + caplen]))
        at += 16 + caplen
    return header, records


def ones_complement_sum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    return (total & 0xFFFF) + (total >> 16)


@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_headers_by_hand(tmp_path, nanosecond):
    ev = events(200, seed=3, mix={"normal": 1.0})
    path = tmp_path / "normal.pcap"
    assert write_pcap(path, [ev[:100], ev[100:]], nanosecond=nanosecond) == len(ev)
    header, records = read_pcap(path.read_bytes())
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    assert header == (magic, 2, 4, 0, 0, fasttcp.synth.SNAPLEN, 1)
    assert len(records) == len(ev)
    for i, ((sec, frac, caplen, orig_len, frame), e) in enumerate(zip(records, ev)):
        assert sec == e["ts"] // 10**9
        assert frac == (e["ts"] % 10**9 if nanosecond else e["ts"] % 10**9 // 1000)
        assert struct.unpack("!H", frame[12:14]) == (0x0800,)
        ip, tcp = frame[14:34], frame[34:]
        vihl, _, total, ip_id, frag, ttl, proto, _, src, dst = struct.unpack("!BBHHHBBHII", ip)
        assert (vihl, frag, ttl, proto, ip_id) == (0x45, 0x4000, 64, 6, i)
        assert (src, dst) == (e["src"], e["dst"]) and ones_complement_sum(ip) == 0xFFFF
        sport, dport, seq, ack, off_flags, window = struct.unpack("!HHIIHH", tcp[:16])
        assert (sport, dport, seq, ack, window) == (e["sport"], e["dport"], e["seq"], e["ack"],
                                                    e["window"])
        assert off_flags & 0xFF == e["flags"] and (off_flags >> 12) * 4 == len(tcp) <= caplen
        options = tcp[20:]
        if e["flags"] & SYN:
            assert options == struct.pack("!BBHBBBB", 2, 4, 1460, 1, 3, 3, 7)
        else:
            assert options == b""
        assert caplen == len(frame) == 14 + 20 + len(tcp)
        assert orig_len == 14 + total == caplen + e["length"]
        if e["length"] == 0:  # the whole segment is captured: its checksum checks
            pseudo = struct.pack("!IIBBH", src, dst, 0, 6, len(tcp))
            assert ones_complement_sum(pseudo + tcp) == 0xFFFF


def test_pcap_is_reproducible_and_gzip_holds_the_same_bytes(tmp_path):
    paths = [tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "a.pcap.gz",
             tmp_path / "b.pcap.gz"]
    for path in paths:
        write_pcap(path, generate(2000, seed=11))
    plain, again, packed, packed_again = (p.read_bytes() for p in paths)
    assert plain == again and packed == packed_again
    assert gzip.decompress(packed) == plain


def test_write_pcap_rejects_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match="SEGMENT_DTYPE"):
        write_pcap(tmp_path / "x.pcap", [np.zeros(3, dtype=fasttcp.EVENT_DTYPE)])


def test_pcap_parses_with_dpkt(tmp_path):
    dpkt = pytest.importorskip("dpkt")
    ev = events(2000, seed=12)
    path = tmp_path / "mix.pcap"
    write_pcap(path, generate(2000, seed=12, batch_size=5000))
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        assert (reader.snaplen, reader.datalink()) == (fasttcp.synth.SNAPLEN, dpkt.pcap.DLT_EN10MB)
        packets = list(reader)
    assert len(packets) == len(ev)
    for (ts, frame), e in zip(packets, ev):
        ip = dpkt.ethernet.Ethernet(frame).data
        tcp = ip.data
        assert round(ts * 10**6) == e["ts"] // 1000
        assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags, tcp.win) == \
            (e["sport"], e["dport"], e["seq"], e["ack"], e["flags"], e["window"])
        assert ip.len - 20 - 4 * tcp.off == e["length"]
        wscale = dict(dpkt.tcp.parse_opts(tcp.opts)).get(dpkt.tcp.TCP_OPT_WSCALE)
        assert (wscale[0] if wscale else -1) == e["wscale"]
