#!/usr/bin/env python3
"""Record River 0.26.1's ADWIN and Page-Hinkley detection indices on deterministic streams.

The streams come from a 64-bit LCG that tests/parity.rs reimplements bit for bit, so the
Rust test needs no Python. Run with a Python that has river==0.26.1:

    /work/venv-river/bin/python crates/keel-drift/bench/make_golden.py \
        > crates/keel-drift/tests/data/river_golden.json
"""
import json

import river
from river import drift

M64 = (1 << 64) - 1


class Lcg:
    """Knuth's MMIX LCG; a value is the top 53 bits of the state scaled to [0, 1)."""

    def __init__(self, seed):
        self.s = seed & M64

    def next_f64(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & M64
        return (self.s >> 11) * (1.0 / 9007199254740992.0)


def make_stream(s):
    g = Lcg(s["seed"])
    out = []
    for i in range(s["n"]):
        after = i >= s["change"]
        if s["kind"] == "bernoulli":
            p = s["p1"] if after else s["p0"]
            out.append(1.0 if g.next_f64() < p else 0.0)
        else:  # "gauss": Irwin-Hall(12) - 6, plus a shift after the change
            acc = 0.0
            for _ in range(12):
                acc += g.next_f64()
            acc -= 6.0
            out.append(acc + (s["shift"] if after else 0.0))
    return out


STREAMS = [
    {"name": "bernoulli_0.2_0.3", "kind": "bernoulli", "seed": 1, "n": 20000, "change": 10000, "p0": 0.2, "p1": 0.3},
    {"name": "bernoulli_0.2_0.25", "kind": "bernoulli", "seed": 2, "n": 20000, "change": 10000, "p0": 0.2, "p1": 0.25},
    {"name": "gauss_shift_0.3", "kind": "gauss", "seed": 3, "n": 20000, "change": 10000, "shift": 0.3},
    {"name": "gauss_no_change", "kind": "gauss", "seed": 4, "n": 20000, "change": 20000, "shift": 0.0},
]

DETECTORS = [
    ("adwin", lambda: drift.ADWIN()),
    ("adwin:delta=0.1,clock=1", lambda: drift.ADWIN(delta=0.1, clock=1)),
    (
        "adwin:delta=0.5,clock=3,max_buckets=2,min_window_length=2,grace_period=3",
        lambda: drift.ADWIN(delta=0.5, clock=3, max_buckets=2, min_window_length=2, grace_period=3),
    ),
    ("page-hinkley", lambda: drift.PageHinkley()),
    ("page-hinkley:threshold=5,delta=0.001,mode=up", lambda: drift.PageHinkley(threshold=5, delta=0.001, mode="up")),
    (
        "page-hinkley:threshold=10,alpha=0.99,mode=down,min_instances=5",
        lambda: drift.PageHinkley(threshold=10, alpha=0.99, mode="down", min_instances=5),
    ),
]


def main():
    cases = []
    for s in STREAMS:
        xs = make_stream(s)
        for spec, make in DETECTORS:
            d = make()
            hits = []
            for i, x in enumerate(xs):
                d.update(x)
                if d.drift_detected:
                    hits.append(i)
            cases.append({"stream": s, "spec": spec, "river_detections": hits})
    print(json.dumps({"river_version": river.__version__, "cases": cases}, indent=1))


if __name__ == "__main__":
    main()
