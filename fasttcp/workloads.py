"""Synthetic event batches for benchmarks: many live connections, uniform or skewed traffic.

>>> w = uniform_workload(connections=1000, events=5000, seed=1)
>>> len(w.setup), len(w.traffic)
(1000, 5000)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fasttcp.dtypes import EVENT_DTYPE, SEGMENT_DTYPE
from fasttcp.models import ACK, PSH


@dataclass(frozen=True)
class Workload:
    """Two EVENT_DTYPE batches: `setup` opens every connection, `traffic` then hits them."""

    setup: np.ndarray
    traffic: np.ndarray


def uniform_workload(connections: int, events: int, seed: int = 0) -> Workload:
    """IPv4 connections picked up mid-stream, then data segments on uniformly random ones.

    Parameters
    ----------
    connections : int
        Distinct connections; `setup` holds one ACK per connection (a mid-stream pickup,
        ESTABLISHED under the loose conntrack model).
    events : int
        Length of `traffic`: PSH-ACK segments of random size, each on a connection drawn
        uniformly, in a random direction, timestamps increasing after the setup's.
    seed : int
        Same seed, same batches.
    """
    rng = np.random.default_rng(seed)
    # distinct endpoint pairs: addresses drawn at random, client ports numbered so no key repeats
    setup = np.zeros(connections, dtype=EVENT_DTYPE)
    setup["ts"] = np.arange(connections, dtype=np.int64)
    setup["src"] = rng.integers(0, 2**32, connections, dtype=np.uint32)
    setup["dst"] = rng.integers(0, 2**32, connections, dtype=np.uint32)
    setup["sport"] = 1024 + np.arange(connections) % 64_000
    setup["src"] += (np.arange(connections) // 64_000).astype(np.uint32)
    setup["dport"] = rng.choice(np.array([80, 443, 22, 25, 8080], dtype=np.uint16), connections)
    setup["flags"] = ACK

    return Workload(setup, _traffic(setup, rng.integers(0, connections, events), rng))


def skewed_workload(connections: int, events: int, seed: int = 0,
                    exponent: float = 1.2) -> Workload:
    """As `uniform_workload`, but traffic picks connections by a Zipf law (`exponent`) over a
    random order: a few heavy connections carry most segments, as in real traffic, so the
    hot records stay in cache.

    >>> w = skewed_workload(connections=1000, events=5000, seed=1)
    >>> len(w.setup), len(w.traffic)
    (1000, 5000)
    """
    base = uniform_workload(connections, 0, seed)
    rng = np.random.default_rng(seed + 1)
    rank = np.arange(1, connections + 1, dtype=np.float64)
    weights = rank ** -exponent
    pick = rng.permutation(connections)[rng.choice(connections, events, p=weights /
                                                   weights.sum())]
    return Workload(base.setup, _traffic(base.setup, pick, rng))


def _traffic(setup: np.ndarray, pick: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PSH-ACK segments on the connections `pick` names, in a random direction each."""
    events = len(pick)
    connections = len(setup)
    reverse = rng.random(events) < 0.5
    traffic = np.zeros(events, dtype=EVENT_DTYPE)
    traffic["ts"] = connections + np.arange(events, dtype=np.int64)
    chosen = setup[pick]
    for a, b in (("src", "dst"), ("sport", "dport")):
        traffic[a] = np.where(reverse, chosen[b], chosen[a])
        traffic[b] = np.where(reverse, chosen[a], chosen[b])
    traffic["flags"] = PSH | ACK
    traffic["length"] = rng.integers(0, 1461, events, dtype=np.uint32)
    return traffic


def columns(events: np.ndarray) -> dict:
    """Contiguous per-field arrays of a structured event batch, as `Tracker.update` takes them."""
    return {name: np.ascontiguousarray(events[name]) for name in events.dtype.names or ()}


def with_sequence(events: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An EVENT_DTYPE batch as SEGMENT_DTYPE rows, for sequence-aware tracking: random
    sequence and acknowledgement numbers, full windows, no window scale."""
    segments = np.zeros(len(events), dtype=SEGMENT_DTYPE)
    for name in events.dtype.names or ():
        segments[name] = events[name]
    segments["seq"] = rng.integers(0, 2**32, len(events), dtype=np.uint32)
    segments["ack"] = rng.integers(0, 2**32, len(events), dtype=np.uint32)
    segments["window"] = 65535
    segments["wscale"] = -1
    return segments
