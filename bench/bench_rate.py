"""Load benchmark of ``pfmvg rate serve``: concurrent readers on loopback for a bounded time, then the database counted.

Run: ``python bench/bench_rate.py [--raters 10] [--duration 60] [--docs 200]``. Starts the real server (a
subprocess, its own SQLite file in a temporary folder) over a plain samples file of two models and ``--docs``
documents with images. Each reader signs in, then loops as fast as it can: open its next item page, save a rating
(``POST /api/rate``, committed before the reply) and, every third item, a corrected box and a comment; it wraps around
its queue, so later answers overwrite earlier ones (upserts). Prints p50/p95/max latency per request kind, then
counts the rows: one per (reader, item) answered, each holding the last rating sent (no loss), none twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _samples(folder: Path, docs: int) -> list[str]:
    from pfmvg_plugin.data.store import PreparedDataset
    from pfmvg_plugin.data.synth import generate_synthcxr

    generate_synthcxr(folder / "synthcxr", n=24, size=256)
    ds = PreparedDataset(folder / "synthcxr")
    images = [r["image"] for r in ds.records("train")]
    specs = []
    for model in ("alpha", "beta"):
        path = folder / f"{model}.jsonl"
        with open(path, "w") as f:
            for n in range(docs):
                f.write(json.dumps({"id": f"doc{n}", "prediction": f"{model}: finding {n} " * 20,
                                    "reference": f"finding {n} " * 20, "dataset_dir": str(ds.path),
                                    "image": images[n % len(images)]}) + "\n")
        specs += ["--samples", f"{model}={path}"]
    return specs


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _reader(url: str, name: str, queue_len: int, until: float, latencies: dict[str, list[float]],
                  last: dict[tuple[str, int], int], failures: list[str]) -> int:
    import aiohttp

    sent = 0
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # an IP host
        async with session.post(f"{url}/login", data={"name": name}) as r:
            await r.read()
        pos = 0
        while time.monotonic() < until:
            t0 = time.perf_counter()
            async with session.get(f"{url}/item/{pos}", allow_redirects=False) as r:
                await r.read()
                ok = r.status == 200
            latencies["GET /item"].append(time.perf_counter() - t0)
            if not ok:
                failures.append(f"{name} GET /item/{pos}: {r.status}")
            rating = 1 + (sent + len(name)) % 5
            body = {"pos": pos, "rating": rating, "comment": f"{name} {sent}" if pos % 3 == 0 else "",
                    "box": [10, 20, 100 + pos % 50, 120] if pos % 3 == 0 else None}
            t0 = time.perf_counter()
            async with session.post(f"{url}/api/rate", json=body) as r:
                reply = await r.json()
            latencies["POST /api/rate"].append(time.perf_counter() - t0)
            if r.status != 200 or not reply.get("saved"):
                failures.append(f"{name} POST pos {pos}: {r.status} {reply}")
            else:
                last[(name, pos)] = rating
            sent += 1
            pos = (pos + 1) % queue_len
    return sent


async def _load(url: str, raters: int, queue_len: int, duration: float):
    latencies: dict[str, list[float]] = {"GET /item": [], "POST /api/rate": []}
    last: dict[tuple[str, int], int] = {}
    failures: list[str] = []
    until = time.monotonic() + duration
    sent = await asyncio.gather(*(_reader(url, f"reader{k:02d}", queue_len, until, latencies, last, failures)
                                  for k in range(raters)))
    return latencies, last, failures, sum(sent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=10, help="concurrent readers (default 10)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--docs", type=int, default=200, help="documents per model (default 200)")
    args = parser.parse_args(argv)
    from pfmvg_plugin.rate.items import load_items
    from pfmvg_plugin.rate.queue import rater_queue

    with tempfile.TemporaryDirectory(prefix="pfmvg-bench-rate-") as tmp:
        folder = Path(tmp)
        specs = _samples(folder, args.docs)
        db = folder / "ratings.sqlite"
        server = subprocess.Popen([sys.executable, "-m", "pfmvg_plugin.cli.main", "rate", "serve", *specs, "--db",
                                   str(db), "--port", "0"], stderr=subprocess.PIPE, text=True)
        try:
            url = None
            for line in server.stderr:
                m = re.search(r"readers open (http://\S+)/ ;", line)
                if m:
                    url = m[1]
                    break
            if url is None:
                raise SystemExit("the server did not start")
            queue_len = len(rater_queue(load_items([s for s in specs if s != "--samples"]), "x"))
            print(f"{args.raters} readers, {args.duration:g} s, {queue_len} items each, server at {url}",
                  file=sys.stderr)
            latencies, last, failures, sent = asyncio.run(_load(url, args.raters, queue_len, args.duration))
        finally:
            server.terminate()
            server.wait(timeout=30)
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT rater, item, rating FROM ratings").fetchall()
            dupes = conn.execute("SELECT COUNT(*) FROM (SELECT rater, item FROM ratings GROUP BY rater, item "
                                 "HAVING COUNT(*) > 1)").fetchone()[0]
        items = load_items([s for s in specs if s != "--samples"])
        keys = {(name, pos): rater_queue(items, name)[pos].item.key for name, pos in last}
        stored = {(r, i): v for r, i, v in rows}
        lost = [k for k, v in last.items() if stored.get((k[0], keys[k])) != v]
    print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}, Python "
          f"{platform.python_version()}; answers sent {sent} ({sent / args.duration:.0f}/s), failures {len(failures)}")
    for kind, values in latencies.items():
        ms = [v * 1000 for v in values]
        print(f"{kind:<16} n={len(ms):>6}  p50 {statistics.median(ms):7.1f} ms  p95 {_percentile(ms, 0.95):7.1f} ms"
              f"  max {max(ms):7.1f} ms")
    print(f"database: {len(rows)} rows, {len(last)} (reader, item) answered, {len(lost)} lost or stale, "
          f"{dupes} duplicated")
    for failure in failures[:5]:
        print("failure:", failure)
    return 0 if not failures and not lost and not dupes and len(rows) == len(last) else 1


if __name__ == "__main__":
    sys.exit(main())
