#!/usr/bin/env python3
"""Memory per participant, per published track and per consumer of the release SFU (issue 25).

Each configuration runs against a fresh `sfu serve` (pinned like `make bench`'s): `sfu-load` reads
the server's resident memory (VmRSS) before the first participant joins and when its window closes
(after the warm-up and the window: retransmission buffers and send histories have filled), and
counts participants, published tracks and consumers (one per track a participant receives). A
least-squares fit over the configurations splits the growth into

    growth = a x participants + b x published tracks + c x consumers + d

and prints a, b and c. Run twice: with audio and video, and video only (so c is a video consumer's
cost, the issue's "under 100 KB per video consumer").

    python3 bench/memory.py [--out bench/results-memory.md]

Standard library only. Needs `.build/release/sfu` and `.build/release/sfu-load`.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from load_scenarios import ROOT, Target, load_report, machine  # noqa: E402

# (publishers, subscribers) per room, one room each: the counts differ enough in each direction for
# the fit to tell a participant, a published track and a consumer apart.
CONFIGS = [(1, 10), (1, 60), (3, 10), (3, 60), (5, 30), (2, 90)]


def solve(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Least squares: the normal equations, solved by Gaussian elimination."""
    n = len(rows[0])
    ata = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    aty = [sum(r[i] * y for r, y in zip(rows, ys)) for i in range(n)]
    m = [ata[i] + [aty[i]] for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col and m[col][col]:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


def run_config(bindir: pathlib.Path, workdir: pathlib.Path, pubs: int, subs: int, audio: bool, args) -> dict:
    target = Target("sfu", args.server_core, bindir, workdir)
    try:
        return load_report(target, bindir, args.load_core,
                           ["--rooms", "1", "--publishers", str(pubs), "--subscribers", str(subs), "--bitrate", args.bitrate,
                            "--duration", str(args.duration), "--warmup", str(args.warmup), "--remb", "50M",
                            *([] if audio else ["--no-audio"])], timeout=args.duration + 180)
    finally:
        target.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bindir", default=str(ROOT / ".build" / "release"))
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--bitrate", default="1.5M")
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--load-core", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    bindir = pathlib.Path(args.bindir)
    lines = ["# Server memory per participant, published track and consumer (`bench/memory.py`)", "", *machine(), "",
             f"One room per run, a fresh `sfu serve` each time; video {args.bitrate} at 30 fps, REMB subscribers (every "
             f"track forwarded whole); RSS read before the first join and at the end of a {args.warmup:g} s warm-up and "
             f"{args.duration:g} s window.", ""]
    for audio in (True, False):
        rows, ys, table = [], [], []
        with tempfile.TemporaryDirectory(prefix="sfu-memory-") as tmp:
            for pubs, subs in CONFIGS:
                r = run_config(bindir, pathlib.Path(tmp), pubs, subs, audio, args)
                srv = r["server"]
                if srv.get("rss_before_bytes") is None or srv.get("rss_end_bytes") is None:
                    raise RuntimeError(f"no RSS figures in the report: {srv}")
                growth = srv["rss_end_bytes"] - srv["rss_before_bytes"]
                tracks = pubs * (2 if audio else 1)
                rows.append([srv["participants"], tracks, srv["consumers"], 1.0])
                ys.append(growth)
                table.append(f"| {pubs} | {subs} | {srv['participants']} | {tracks} | {srv['consumers']} | "
                             f"{growth / 1024:,.0f} | {r['received']['loss_percent']} |")
        a, b, c, d = solve(rows, ys)
        kind = "audio and video" if audio else "video only"
        lines += [f"## {kind}", "", "| publishers | subscribers | participants | published tracks | consumers | RSS growth (KiB) | loss % |",
                  "|---|---|---|---|---|---|---|", *table, "",
                  f"Fit: **{a / 1024:,.1f} KiB per participant, {b / 1024:,.1f} KiB per published track, "
                  f"{c / 1024:,.1f} KiB per consumer** ({'audio and video together' if audio else 'a video consumer'}), "
                  f"{d / 1024:,.0f} KiB fixed.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
