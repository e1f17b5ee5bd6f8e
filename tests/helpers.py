"""Builders for scripted segment sequences shared by the tests."""
import numpy as np

from fasttcp import Tracker, addresses

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 80)
CLIENT6 = ("2001:db8::1", 40000)
SERVER6 = ("2001:db8::2", 443)


def script(steps, client=CLIENT, server=SERVER, t0=1_000_000_000, step_ns=1_000):
    """Columns for a list of (sender, flags[, length]) with sender 'c' or 's'."""
    src, sport, dst, dport, flags, length = [], [], [], [], [], []
    for step in steps:
        who, fl = step[0], step[1]
        a, b = (client, server) if who == "c" else (server, client)
        src.append(a[0])
        sport.append(a[1])
        dst.append(b[0])
        dport.append(b[1])
        flags.append(fl)
        length.append(step[2] if len(step) > 2 else 0)
    n = len(steps)
    return dict(ts=t0 + step_ns * np.arange(n, dtype=np.int64), src=addresses(src),
                sport=np.array(sport, dtype=np.uint16), dst=addresses(dst),
                dport=np.array(dport, dtype=np.uint16), flags=np.array(flags, dtype=np.uint8),
                length=np.array(length, dtype=np.uint32))


def run(steps, tracker=None, model="conntrack", **kw):
    """Feeds a script one batch; returns (tracker, state names, verdict names) per event."""
    if tracker is None:
        tracker = Tracker(model, capacity=64, seed=1)
    res = tracker.update(**script(steps, **kw), return_events=True)
    states = [tracker.model.states[s] for s in res.state]
    verdicts = [("new", "valid", "invalid", "ignored")[v] for v in res.verdict]
    return tracker, states, verdicts


def snapshot(tracker):
    """Everything observable about a tracker, for before/after comparisons."""
    return (len(tracker), tracker.histogram(), tracker.stats,
            tracker.records(4).tobytes(), tracker.records(6).tobytes())
