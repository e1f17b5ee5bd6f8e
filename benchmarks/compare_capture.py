"""fasttcp on the capture path beside whichever peers are installed, on the same capture.

    python benchmarks/compare_capture.py                   # ~2.5M packets, 200k connections
    python benchmarks/compare_capture.py --connections 20000 --repeats 3 --json
    python benchmarks/compare_capture.py --peer-python /path/to/venv/bin/python

Makes a capture with ``fasttcp generate`` (kept in --workdir between runs), then times, round by
round so that changes in the host's speed reach all contestants alike:

* fasttcp reading the capture (the compiled reader alone, in this process);
* ``fasttcp analyze CAPTURE --flows out.csv`` in this process, and as a whole process through
  the ``fasttcp`` command beside this interpreter (the interpreter's start and imports
  included), the way a user runs it;
* a dpkt-based Python tracker (dpkt decodes, a dict keeps per-connection counters and the OR
  of flags, a CSV of flows at the end): what a Python user writes without fasttcp;
* NFStream (statistical analysis and dissection off), writing its flows to CSV;
* scapy (``rdpcap``-free streaming with PcapReader) on a prefix of the capture, its rate scaled;
* Suricata 7 (no rules, ``--runmode single``: flow tracking only) and tcptrace when they are
  on PATH.

The Python peers run under --peer-python (default: this interpreter), so they can live in a
virtualenv of their own (``pip install nfstream scapy dpkt``). Every peer runs as a whole
process; its packets per second and fasttcp's ratio to it are printed from the median of the
rounds. A peer that is not installed is named, with why, instead of a row: Suricata in
particular has no package in this host's Debian release and none on PyPI.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import fasttcp
from fasttcp.analyze import analyze
from fasttcp.bench import median_rates

WORKDIR = os.path.join(tempfile.gettempdir(), "fasttcp-bench")
DPKT_TRACKER = r"""
import csv, socket, sys
import dpkt
flows = {}
with open(sys.argv[1], "rb") as f:
    for ts, buf in dpkt.pcap.Reader(f):
        ip = dpkt.ethernet.Ethernet(buf).data
        if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        a, b = (ip.src, tcp.sport), (ip.dst, tcp.dport)
        key = (a, b) if a <= b else (b, a)
        flow = flows.get(key)
        if flow is None:
            flow = flows[key] = [ts, ts, 0, 0, 0, 0, 0, 0, a]
        d = 0 if a == flow[8] else 1
        flow[1] = ts
        flow[2 + d] += 1
        flow[4 + d] += ip.len - 4 * ip.hl - 4 * tcp.off
        flow[6 + d] |= tcp.flags
with open(sys.argv[2], "w", newline="") as out:
    w = csv.writer(out)
    for (a, b), f in flows.items():
        w.writerow([f[0], socket.inet_ntoa(a[0]), a[1], socket.inet_ntoa(b[0]), b[1], *f[1:8]])
"""

NFSTREAM = r"""
import sys
from nfstream import NFStreamer
NFStreamer(source=sys.argv[1], statistical_analysis=False, n_dissections=0).to_csv(sys.argv[2])
"""

SCAPY = r"""
import sys
from scapy.all import IP, TCP, PcapReader
flows = {}
n = 0
for pkt in PcapReader(sys.argv[1]):
    n += 1
    if n > int(sys.argv[3]):
        break
    if IP in pkt and TCP in pkt:
        ip, tcp = pkt[IP], pkt[TCP]
        a, b = (ip.src, tcp.sport), (ip.dst, tcp.dport)
        key = (a, b) if a <= b else (b, a)
        flows[key] = flows.get(key, 0) + 1
"""


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def has_module(python: str, module: str) -> bool:
    """Whether `python` can import `module`."""
    return subprocess.run([python, "-c", f"import {module}"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def fasttcp_command() -> list[str]:
    """The ``fasttcp`` command installed beside this interpreter (its launcher runs before
    numpy loads), else ``python -m fasttcp``."""
    script = os.path.join(os.path.dirname(sys.executable), "fasttcp")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "fasttcp"]


def contestants(capture: str, packets: int, workdir: str, scapy_packets: int,
                peer_python: str) -> tuple[dict, dict]:
    """name -> (callable, packets it handles) for `median_rates`, and name -> why a peer is
    not run."""
    flows = os.path.join(workdir, "flows.csv")
    missing = {}

    def read_only() -> None:
        with fasttcp.open_capture(capture) as cap:
            for _ in cap:
                pass

    out: dict = {
        "fasttcp read (in process)": (read_only, packets),
        "fasttcp analyze --flows (in process)": (
            lambda: analyze([capture], flows_path=flows), packets),
        "fasttcp analyze --flows (process)": (
            lambda: run([*fasttcp_command(), "analyze", capture, "--flows", flows]), packets),
    }
    python_peers = [
        ("dpkt", "dpkt + dict tracker (process)", [DPKT_TRACKER, capture, flows], packets),
        ("nfstream", "NFStream, no dissection (process)", [NFSTREAM, capture, flows], packets),
        ("scapy", f"scapy, first {scapy_packets:,} packets (process)",
         [SCAPY, capture, flows, str(scapy_packets)], scapy_packets),
    ]
    for module, name, args, packets in python_peers:
        if has_module(peer_python, module):
            out[name] = (lambda args=args: run([peer_python, "-c", *args]), packets)
        else:
            missing[name] = f"{peer_python} cannot import {module} (pip install {module})"
    suricata = "Suricata 7, no rules, 1 thread (process)"
    if shutil.which("suricata"):
        log = os.path.join(workdir, "suricata")
        os.makedirs(log, exist_ok=True)
        out[suricata] = (
            lambda: run(["suricata", "-r", capture, "-l", log, "-k", "none", "-S", "/dev/null",
                         "--runmode", "single"]), packets)
    else:
        missing[suricata] = ("suricata is not on PATH (this host's Debian release has no "
                             "suricata package and PyPI has none: the 8x figure against it "
                             "cannot be measured here)")
    if shutil.which("tcptrace"):
        out["tcptrace (process)"] = (lambda: run(["tcptrace", "-n", capture]), packets)
    else:
        missing["tcptrace (process)"] = "tcptrace is not on PATH (apt-get install tcptrace)"
    return out, missing


def measure(connections: int = 200_000, seed: int = 1, repeats: int = 3,
            scapy_packets: int = 100_000, workdir: str = WORKDIR,
            peer_python: str = sys.executable) -> dict:
    """Packets per second of every contestant that runs here (the median of `repeats`
    rounds) on the capture ``fasttcp generate --connections CONNECTIONS --seed SEED`` makes
    (kept in `workdir`), and why each of the others was not run."""
    os.makedirs(workdir, exist_ok=True)
    capture = os.path.join(workdir, f"synth-{connections}-{seed}.pcap")
    if not os.path.exists(capture):
        subprocess.run([sys.executable, "-m", "fasttcp", "generate", capture, "--connections",
                        str(connections), "--seed", str(seed)], check=True,
                       stdout=subprocess.DEVNULL)
    with fasttcp.open_capture(capture) as cap:
        for _ in cap:
            pass    # also warms the page cache for everyone
    packets = cap.stats.packets
    runs, missing = contestants(capture, packets, workdir, min(scapy_packets, packets),
                                peer_python)
    rates = median_rates(runs, repeats)
    return {"capture": capture, "packets": packets, "bytes": os.path.getsize(capture),
            "repeats": repeats, "packets_per_s": rates, "not_run": missing}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=200_000,
                        help="scenario instances in the generated capture (200k: ~2.5M packets)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scapy-packets", type=int, default=100_000)
    parser.add_argument("--workdir", default=WORKDIR)
    parser.add_argument("--peer-python", default=sys.executable,
                        help="the interpreter that runs the Python peers (dpkt, NFStream, scapy)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    result = measure(args.connections, args.seed, args.repeats, args.scapy_packets,
                     args.workdir, args.peer_python)
    rates, missing = result["packets_per_s"], result["not_run"]
    if args.json:
        print(json.dumps(result))
        return 0
    ours = rates["fasttcp analyze --flows (process)"]
    print(f"{os.path.basename(result['capture'])}: {result['packets']:,} packets, "
          f"{result['bytes'] / 1e6:.0f} MB, median of {args.repeats} rounds")
    print(f"{'':44}{'packets/s':>14}  fasttcp analyze (process) runs")
    for name, rate in rates.items():
        ratio = "" if name.startswith("fasttcp") else f"{ours / rate:,.1f}x as fast"
        print(f"{name:44}{rate:>14,.0f}  {ratio}")
    for name, why in missing.items():
        print(f"not run: {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
