"""Load on ``fersearch serve``: real FER2013 faces as PNG over loopback, against ``predict`` offline.

One run, one machine: the export's offline throughput (``predict_paths`` over the same PNG files, in this
process), then ``fersearch serve EXPORT`` in a subprocess and, at each concurrency level, a bounded number of
good requests (each face once) mixed with a share of bad ones (empty, not an image, truncated, too large,
wrong content type, 1×1). Prints per level: good requests/s, p50/p95/p99 latency, errors by kind, the ratio
of served to offline throughput; checks every good answer against the offline records (served = offline, to
1e-6) and every bad one for a 4xx with its reason. Then one replica is killed (SIGKILL, its pid from
``/healthz``) during a run at the middle concurrency: failed good requests and seconds until a new
replica answered. The server must be healthy at the end. Images are PublicTest's pixels only (no labels).

    python -m benchmarks.serve_load --export runs/<quick run>/export --data ../shared/data/fer2013.csv.gz
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.machine import load, machine_info
from search.serving import Predictor, predict_paths

RESULTS = Path(__file__).parent / "results" / "serve_load.json"
BAD_KINDS = ("empty", "text", "truncated", "too_large", "wrong_type", "one_pixel")


def fer_faces(csv_path: Path, n: int, out: Path) -> list[Path]:
    """The first ``n`` PublicTest faces of the Kaggle CSV written as 48×48 PNG files (pixels only)."""
    opener = gzip.open if csv_path.suffix == ".gz" else open
    paths = []
    with opener(csv_path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["Usage"] != "PublicTest":
                continue
            img = np.array(row["pixels"].split(), np.uint8).reshape(48, 48)
            path = out / f"face_{len(paths):05d}.png"
            cv2.imwrite(str(path), img)
            paths.append(path)
            if len(paths) == n:
                break
    return paths


def bad_request(kind: str, good: bytes, max_bytes: int) -> tuple[bytes, str]:
    """(body, content type) of one bad request of ``kind``."""
    if kind == "empty":
        return b"", "image/png"
    if kind == "text":
        return b"this is not an image", "image/png"
    if kind == "truncated":
        big = cv2.imencode(".jpg", cv2.resize(cv2.imdecode(np.frombuffer(good, np.uint8), 0), (240, 240)))[1]
        return big.tobytes()[: len(big) // 2], "image/jpeg"
    if kind == "too_large":
        return b"\x89PNG\r\n\x1a\n" + bytes(max_bytes), "image/png"
    if kind == "wrong_type":
        return good, "text/plain"
    if kind == "one_pixel":
        return cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes(), "image/png"
    raise ValueError(kind)


def percentile_ms(values: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(values, q)), 1) if values else float("nan")


async def run_level(
    url: str,
    files: list[Path],
    concurrency: int,
    bad_share: float,
    max_bytes: int,
    kill_after: int | None = None,
) -> dict:
    """Every file once as a good request, plus ``bad_share`` bad ones, ``concurrency`` at a time. With
    ``kill_after``: after that many answers, SIGKILL the replica that answered ``/healthz``."""
    import aiohttp

    bodies = {p.name: p.read_bytes() for p in files}
    jobs: list[tuple[str, str | None]] = [(p.name, None) for p in files]
    n_bad = round(bad_share * len(files))
    rng = np.random.default_rng(concurrency)
    for i in range(n_bad):
        jobs.insert(
            int(rng.integers(0, len(jobs) + 1)), (files[i % len(files)].name, BAD_KINDS[i % len(BAD_KINDS)])
        )
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies, answers, failures, bad_status = [], {}, [], {}
    done = 0
    killed: dict = {}
    pids: set = set()
    timeout = aiohttp.ClientTimeout(total=120)

    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def kill() -> None:
            async with session.get(f"{url}/healthz") as r:
                pid = (await r.json())["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, at=time.perf_counter(), failed=0, first_ok_s=None, replaced_s=None,
                          before=set(pids))  # fmt: skip

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                name, kind = queue.get_nowait()
                body, ctype = (
                    (bodies[name], "image/png")
                    if kind is None
                    else bad_request(kind, bodies[name], max_bytes)
                )
                t = time.perf_counter()
                try:
                    async with session.post(
                        f"{url}/predict", data=body, headers={"Content-Type": ctype, "X-Filename": name}
                    ) as r:
                        status, payload = r.status, await r.json(content_type=None)
                        by = r.headers.get("X-Served-By")
                except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as e:
                    status, payload, by = 0, {"error": type(e).__name__}, None
                dt = time.perf_counter() - t
                done += 1
                if kind is None:
                    if status == 200:
                        latencies.append(dt)
                        answers[name] = payload
                        pids.add(by)
                        since = round(time.perf_counter() - killed["at"], 2) if killed else None
                        if killed and killed["first_ok_s"] is None:
                            killed["first_ok_s"] = since
                        if killed and killed["replaced_s"] is None and by not in killed["before"]:
                            killed["replaced_s"] = since
                    else:
                        failures.append((name, status, str(payload.get("error"))[:120]))
                        if killed:
                            killed["failed"] += 1
                else:
                    ok = 400 <= status < 500 and bool(payload.get("error")) and "\n" not in payload["error"]
                    bad_status.setdefault(kind, {"n": 0, "4xx_with_reason": 0, "statuses": set()})
                    bad_status[kind]["n"] += 1
                    bad_status[kind]["4xx_with_reason"] += ok
                    bad_status[kind]["statuses"].add(status)
                if kill_after is not None and done == kill_after and not killed:
                    await kill()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        while killed and killed["replaced_s"] is None and time.perf_counter() - killed["at"] < 120:
            try:  # the load ended first: watch /healthz until a replica that was not there answers
                async with session.get(f"{url}/healthz") as r:
                    if r.status == 200 and str((await r.json())["pid"]) not in killed["before"] | {
                        str(killed["pid"])
                    }:
                        killed["replaced_s"] = round(time.perf_counter() - killed["at"], 2)
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.25)
        if killed:
            killed["before"] = sorted(str(p) for p in killed["before"])
    for v in bad_status.values():
        v["statuses"] = sorted(v["statuses"])
    return {
        "concurrency": concurrency, "good": len(files), "ok": len(latencies), "bad": n_bad,
        "wall_s": round(wall, 2),
        "good_per_s": round(len(latencies) / wall, 1), "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95), "p99_ms": percentile_ms(latencies, 99),
        "failed_good": failures[:10], "failed_good_n": len(failures), "bad_requests": bad_status,
        "answers": answers, "kill": killed or None,
    }  # fmt: skip


#: Records carry probabilities rounded to 6 decimals: two values 1e-7 apart (ONNX Runtime's sums in
#: another batch) can round one unit of the last digit apart, so equal means within one unit.
TOLERANCE = 1e-6 + 1e-9


def same_as_offline(answers: dict[str, dict], offline: dict[str, dict]) -> int:
    """How many served answers differ from the offline record of the same file (class, or a probability
    by more than one unit of the records' sixth decimal)."""
    wrong = 0
    for name, answer in answers.items():
        served, local = answer["results"][0], offline[name]
        same = served["class"] == local["class"] and all(
            abs(served["probabilities"][c] - p) <= TOLERANCE for c, p in local["probabilities"].items()
        )
        wrong += not same
    return wrong


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    import urllib.request

    end = time.time() + timeout_s
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"serve_load: fersearch serve exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"serve_load: {url}/healthz did not answer within {timeout_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="FER2013 Kaggle CSV (.csv or .csv.gz)")
    ap.add_argument("--n", type=int, default=600, help="good requests per concurrency level")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--bad-share", type=float, default=0.1)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-mb", type=float, default=1.0)
    ap.add_argument(
        "--serve-env", action="append", default=[], metavar="KEY=VALUE",
        help="environment of the server (e.g. RAY_SERVE_ENABLE_HA_PROXY=1: Ray Serve's HAProxy ingress)",
    )  # fmt: skip
    args = ap.parse_args()
    levels = [int(c) for c in args.levels.split(",")]
    max_bytes = int(args.max_mb * 2**20)
    rec: dict = {**machine_info(), "load_before": load(), "export": str(args.export), "n": args.n,
                 "replicas": args.replicas, "max_batch": args.max_batch,
                 "started": time.strftime("%F %T")}  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        files = fer_faces(args.data, args.n, Path(d))
        predictor = Predictor.from_dir(args.export)
        list(predict_paths(predictor, files[:32]))  # warm-up
        t = time.perf_counter()
        offline = {Path(r.input).name: r.to_json() for r in predict_paths(predictor, files)}
        rec["offline_per_s"] = round(len(files) / (time.perf_counter() - t), 1)
        del predictor
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "search.cli", "serve", str(args.export), "--port", str(port),
               "--replicas", str(args.replicas), "--max-batch", str(args.max_batch),
               "--max-mb", str(args.max_mb)]  # fmt: skip
        env = {**os.environ, **dict(kv.split("=", 1) for kv in args.serve_env)}
        rec["serve_env"] = args.serve_env
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
        try:
            wait_healthy(url, proc)
            asyncio.run(run_level(url, files[:64], 8, 0.0, max_bytes))  # warm-up: replicas, batches
            rec["levels"] = []
            for c in levels:
                r = asyncio.run(run_level(url, files, c, args.bad_share, max_bytes))
                r["mismatches"] = same_as_offline(r.pop("answers"), offline)
                r["served_over_offline"] = round(r["good_per_s"] / rec["offline_per_s"], 3)
                rec["levels"].append(r)
            mid = levels[len(levels) // 2]
            r = asyncio.run(run_level(url, files, mid, 0.0, max_bytes, kill_after=len(files) // 3))
            r["mismatches"] = same_as_offline(r.pop("answers"), offline)
            rec["replica_kill"] = r
            time.sleep(2)
            wait_healthy(url, proc, 120)
            rec["healthy_at_end"] = True
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(format_record(rec))
    RESULTS.parent.mkdir(exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps([*old, rec], indent=1, default=str) + "\n")


def format_record(rec: dict) -> str:
    lines = [
        f"serve load on {rec['cpu']} ({rec['cores']} cores, commit {rec['commit']}, load "
        f"{rec['load_before']}): {rec['replicas']} replica(s), batches ≤ {rec['max_batch']}"
        f"{', ' + ' '.join(rec['serve_env']) if rec.get('serve_env') else ''}; offline "
        f"{rec['offline_per_s']:.0f} faces/s",
        f"  {'conc':>4} {'good/s':>7} {'vs offline':>10} {'p50':>7} {'p95':>7} {'p99':>7} {'failed':>6} "
        f"{'≠offline':>8}  bad requests (4xx with reason / sent)",
    ]
    for r in rec.get("levels", []):
        bad = ", ".join(
            f"{k} {v['4xx_with_reason']}/{v['n']} {v['statuses']}" for k, v in r["bad_requests"].items()
        )
        lines.append(
            f"  {r['concurrency']:>4} {r['good_per_s']:>7.1f} {r['served_over_offline']:>10.2f} "
            f"{r['p50_ms']:>5.1f}ms {r['p95_ms']:>5.1f}ms {r['p99_ms']:>5.1f}ms {r['failed_good_n']:>6} "
            f"{r['mismatches']:>8}  {bad}"
        )
    k = rec.get("replica_kill")
    if k:
        kill = k.get("kill") or {}
        lines.append(
            f"  replica kill at concurrency {k['concurrency']}: pid {kill.get('pid')} killed after "
            f"{k['good'] // 3} answers; {k['failed_good_n']} good requests failed; next answer after "
            f"{kill.get('first_ok_s')} s, a new replica answering after {kill.get('replaced_s')} s; "
            f"{k['ok']}/{k['good']} answered, {k['mismatches']} ≠ offline"
        )
    lines.append(f"  healthy at the end: {rec.get('healthy_at_end', False)}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
