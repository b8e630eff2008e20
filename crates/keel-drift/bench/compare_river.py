#!/usr/bin/env python3
"""Side-by-side comparison of Keel's drift detectors with River 0.26.1.

Generates the same streams for both (fixed seeds, written as little-endian f64 files),
runs River's ADWIN, PageHinkley and KSWIN in-process and Keel's replay command as a
separate process on each, and prints a table: first detection index of each, whether
they are identical, throughput of each and the speed-up.

Usage (from the workspace root):

    python3 crates/keel-drift/bench/compare_river.py [--venv DIR] [--keel-cmd "CMD"] \
        [--n 1000000] [--kswin-river-n 20000] [--markdown FILE]

--venv      virtualenv holding river==0.26.1; created (python -m venv + pip install)
            when missing. Default: $KEEL_RIVER_VENV or target/river-venv.
--keel-cmd  command that accepts `--detector SPEC --format f64 FILE` and prints one
            detection index per stdout line, e.g. "target/release/keel drift replay".
            Default: the keel-drift `replay` example, built with `cargo build --release`
            (honours CARGO_TARGET_DIR).

River is timed around its update loop only (values already in a Python list); Keel is
timed as a whole process (start-up, reading the file, detecting, printing), so the
speed-up is conservative. River's KSWIN is slow (scipy's ks_2samp on every update),
so it runs on the first --kswin-river-n values only; the table says so.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

RIVER_VERSION = "0.26.1"
HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parent.parent.parent


def ensure_river(venv: Path) -> None:
    """Re-run this script under a Python that has river==0.26.1, creating the venv if needed."""
    try:
        import river  # noqa: F401

        if river.__version__ == RIVER_VERSION:
            return
    except ImportError:
        pass
    py = venv / "bin" / "python"
    if os.environ.get("KEEL_COMPARE_REEXEC") == "1":
        sys.exit(f"river=={RIVER_VERSION} is not importable from {sys.executable}")
    if not py.exists():
        print(f"creating venv {venv} with river=={RIVER_VERSION} …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    check = subprocess.run([str(py), "-c", f"import river; assert river.__version__ == '{RIVER_VERSION}'"],
                           capture_output=True)
    if check.returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"river=={RIVER_VERSION}"], check=True)
    env = dict(os.environ, KEEL_COMPARE_REEXEC="1")
    os.execve(str(py), [str(py), __file__, *sys.argv[1:]], env)


def default_keel_cmd() -> str:
    target = Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))
    print("building the keel-drift replay example (release) …", file=sys.stderr)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "keel-drift", "--example", "replay"],
                   check=True, cwd=WORKSPACE)
    return shlex.quote(str(target / "release" / "examples" / "replay"))


def make_streams(n: int, workdir: Path):
    """The four streams (float64), with the change (if any) at n/2."""
    import numpy as np

    half = n // 2
    specs = []

    def bern(seed, p0, p1):
        u = np.random.default_rng(seed).random(n)
        p = np.where(np.arange(n) < half, p0, p1)
        return (u < p).astype(np.float64)

    specs.append(("bernoulli 0.2→0.3", bern(1, 0.2, 0.3)))
    specs.append(("bernoulli 0.2→0.25", bern(2, 0.2, 0.25)))
    specs.append(("bernoulli 0.2, no change", bern(3, 0.2, 0.2)))
    g = np.random.default_rng(4).normal(0.0, 1.0, n)
    g[half:] += 0.5
    specs.append(("gaussian mean 0→0.5σ", g))
    out = []
    for i, (name, xs) in enumerate(specs):
        path = workdir / f"stream{i}.f64"
        xs.astype("<f8").tofile(path)
        out.append((name, path, xs))
    return out


def river_run(make, xs):
    det = make()
    hits = []
    values = xs.tolist()
    start = time.perf_counter()
    for i, x in enumerate(values):
        det.update(x)
        if det.drift_detected:
            hits.append(i)
    elapsed = time.perf_counter() - start
    return hits, len(values) / elapsed


def keel_run(cmd: str, spec: str, path: Path, n: int):
    argv = shlex.split(cmd) + ["--detector", spec, "--format", "f64", str(path)]
    start = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{r.stderr}")
    hits = [int(line) for line in r.stdout.split()]
    return hits, n / elapsed


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M/s" if x >= 1e6 else f"{x / 1e3:.1f} k/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path,
                    default=Path(os.environ.get("KEEL_RIVER_VENV", WORKSPACE / "target" / "river-venv")))
    ap.add_argument("--keel-cmd", default=None)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--kswin-river-n", type=int, default=20_000)
    ap.add_argument("--workdir", type=Path, default=WORKSPACE / "target" / "drift-bench")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = ap.parse_args()
    ensure_river(args.venv)

    import river
    from river import drift

    keel_cmd = args.keel_cmd or default_keel_cmd()
    args.workdir.mkdir(parents=True, exist_ok=True)
    streams = make_streams(args.n, args.workdir)

    detectors = [
        ("ADWIN", "adwin", lambda: drift.ADWIN(), None),
        ("Page-Hinkley", "page-hinkley", lambda: drift.PageHinkley(), None),
        ("KSWIN", "kswin:seed=42", lambda: drift.KSWIN(seed=42), args.kswin_river_n),
    ]
    header = ("| stream | detector | River values | River first | Keel first | identical first | "
              "all detections identical | River upd/s | Keel upd/s | speed-up |")
    rows = [header, "|" + "---|" * 10]
    print(f"river {river.__version__}, {args.n} values per stream, keel: {keel_cmd}", file=sys.stderr)
    print("\n".join(rows), flush=True)
    for sname, path, xs in streams:
        for dname, spec, make, prefix in detectors:
            rx = xs if prefix is None else xs[:prefix]
            r_hits, r_rate = river_run(make, rx)
            k_hits, k_rate = keel_run(keel_cmd, spec, path, len(xs))
            k_in_prefix = [h for h in k_hits if h < len(rx)]
            r_first = r_hits[0] if r_hits else None
            k_first = k_hits[0] if k_hits else None
            if prefix is None:
                same_first = "yes" if r_first == k_first else "NO"
                same_all = (f"yes ({len(r_hits)})" if r_hits == k_hits
                            else f"NO (River {len(r_hits)}, Keel {len(k_hits)})")
                r_values = f"{len(rx):,}"
            else:
                same_first = "n/a (RNG)"
                same_all = (f"n/a: River {len(r_hits)}, Keel {len(k_in_prefix)} "
                            f"in the first {len(rx):,}")
                r_values = f"first {len(rx):,}"
            row = (f"| {sname} | {dname} | {r_values} | {r_first if r_first is not None else '—'} | "
                   f"{k_first if k_first is not None else '—'} | {same_first} | {same_all} | "
                   f"{fmt_rate(r_rate)} | {fmt_rate(k_rate)} | {k_rate / r_rate:.0f}× |")
            rows.append(row)
            print(row, flush=True)
    notes = [
        "",
        f"River {river.__version__} timed around its update loop; Keel timed as a whole process "
        f"(`{keel_cmd} --detector SPEC --format f64 FILE`) over all {args.n:,} values.",
        f"River's KSWIN ran on the first {args.kswin_river_n:,} values only (scipy `ks_2samp` per update); "
        "KSWIN samples its reference window with a different RNG than River, so its indices are "
        "not expected to coincide (same test, same false-alarm rate).",
    ]
    for line in notes:
        print(line)
    if args.markdown:
        args.markdown.write_text("\n".join(rows + notes) + "\n")


if __name__ == "__main__":
    main()
