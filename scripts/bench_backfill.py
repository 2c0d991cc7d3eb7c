#!/usr/bin/env python3
"""Backfill benchmark: a 50,000-product catalogue against both simulators.

Measures, in one run, with the real binary (`xecm-bridge serve` on SQLite):
  1. enumeration and enqueueing of every launch-ready product through `POST /api/v1/backfills`
     (time from start to `enumerated`, as the store records it), with a `kill -9` of the bridge
     in the middle and a restart: the restarted bridge takes the backfill over from its cursor;
  2. that every product was enqueued exactly once (`found` = `enqueued` = 4ALLPORTAL's total);
  3. the bridge's peak resident memory (VmHWM of both bridge processes);
  4. the OpenText request rate while the worker runs the backfilled launches, per one-second
     window of the OpenText simulator's request log, against `opentext.max_requests_per_sec`.

Usage: scripts/bench_backfill.py [path/to/xecm-bridge]   (default: target/debug/xecm-bridge)
Environment: BENCH_PRODUCTS (50000), BENCH_OT_RATE (20), BENCH_WORK_SECS (60).
Figures go to stdout; BENCHMARKS.md records them. Every wait is bounded.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "xecm-bridge")
PRODUCTS = int(os.environ.get("BENCH_PRODUCTS", "50000"))
OT_RATE = int(os.environ.get("BENCH_OT_RATE", "20"))
WORK_SECS = int(os.environ.get("BENCH_WORK_SECS", "60"))
TOKEN = "bench-admin-token-0123456789"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DEADLINE = 600


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(method, url, body=None, token=TOKEN):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        text = r.read()
        return json.loads(text) if text else None


def wait_until(what, check, limit=DEADLINE):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    work = tempfile.mkdtemp(prefix="bench-backfill-")
    ap_port, ot_port, port = free_port(), free_port(), free_port()
    sims = [
        subprocess.Popen([BIN, "sim", "allportal", "--listen", f"127.0.0.1:{ap_port}",
                          "--products", str(PRODUCTS)], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(work, "ap.log"), "w")),
        subprocess.Popen([BIN, "sim", "opentext", "--listen", f"127.0.0.1:{ot_port}"],
                         stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(work, "ot.log"), "w")),
    ]
    ap = f"http://127.0.0.1:{ap_port}"
    ot = f"http://127.0.0.1:{ot_port}"
    bridge = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update({
        "XECM_BRIDGE__SERVER__LISTEN": f"127.0.0.1:{port}",
        "XECM_BRIDGE__STORE__URL": f"sqlite://{work}/bridge.db",
        "XECM_BRIDGE__ADMIN__TOKEN": TOKEN,
        "XECM_BRIDGE__SOURCES__ALLPORTAL__SECRETS": f'["{SECRET}"]',
        "XECM_BRIDGE__SOURCES__OPENTEXT__SECRETS": f'["{SECRET}"]',
        "XECM_BRIDGE__ALLPORTAL__BASE_URL": ap,
        "XECM_BRIDGE__OPENTEXT__BASE_URL": f"{ot}/otcs/cs",
        "XECM_BRIDGE__OPENTEXT__MAX_REQUESTS_PER_SEC": str(OT_RATE),
        "XECM_BRIDGE__AUDIT__ENABLED": "false",
        "XECM_BRIDGE__MAPPING_CHECK__ON_PROBLEM": "off",
        "XECM_BRIDGE__LOG__FILTER": "warn",
    })
    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config",
                          "example.toml")
    log = open(os.path.join(work, "bridge.log"), "w")

    def start():
        p = subprocess.Popen([BIN, "serve", "--config", config], env=env, stdout=log, stderr=log)
        wait_until("readiness", lambda: urllib.request.urlopen(f"{bridge}/readyz").status == 200)
        return p

    try:
        wait_until("the simulators", lambda: http("GET", f"{ap}/_sim/state", token=None))
        proc = start()
        t_start = time.monotonic()
        started = http("POST", f"{bridge}/api/v1/backfills", {"flow": "launch"})
        bid = started["id"]
        kill_at = PRODUCTS * 2 // 5
        wait_until(f"{kill_at} objects enumerated",
                   lambda: http("GET", f"{bridge}/api/v1/backfills/{bid}")["found"] >= kill_at)
        killed = http("GET", f"{bridge}/api/v1/backfills/{bid}")["found"]
        first_phase = time.monotonic() - t_start
        rss = [peak_rss_mib(proc.pid)]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t_kill = time.monotonic()
        proc = start()
        resumed = wait_until("the takeover", lambda: (
            lambda f: f if f > killed else None)(
            http("GET", f"{bridge}/api/v1/backfills/{bid}")["found"]))
        takeover = time.monotonic() - t_kill
        t_resumed = time.monotonic()
        done = wait_until("enumeration after the restart", lambda: (
            lambda p: p if p["state"] == "enumerated" else None)(
            http("GET", f"{bridge}/api/v1/backfills/{bid}")))
        second_phase = time.monotonic() - t_resumed
        rss.append(peak_rss_mib(proc.pid))
        enumerate_secs = (done["updated_at"] - done["created_at"]) / 1000
        http("DELETE", f"{ot}/_sim/requests", token=None)
        time.sleep(WORK_SECS)
        progress = http("GET", f"{bridge}/api/v1/backfills/{bid}")
        rss.append(peak_rss_mib(proc.pid))
        log_ = http("GET", f"{ot}/_sim/requests", token=None)
        records = log_ if isinstance(log_, list) else log_.get("requests", [])
        times = sorted(r["at_ms"] for r in records)
        peak = 0
        j = 0
        for i, t in enumerate(times):
            while j < len(times) and times[j] < t + 1000:
                j += 1
            peak = max(peak, j - i)
        span = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0
        print(f"products generated:                {PRODUCTS}")
        print(f"launch-ready in 4ALLPORTAL (total): {done['total']}")
        print(f"found when killed (kill -9):       >= {killed}")
        print(f"found / enqueued after restart:    {done['found']} / {done['enqueued']}")
        print(f"exactly once:                      {done['found'] == done['enqueued'] == done['total']}")
        print(f"enumeration + enqueue (incl. kill, restart, lease takeover): {enumerate_secs:.1f} s")
        print(f"  before the kill: {killed} objects in {first_phase:.1f} s "
              f"({killed / first_phase:.0f}/s)")
        print(f"  kill -9 until the restarted bridge went on: {takeover:.1f} s")
        print(f"  after the takeover: {done['found'] - resumed} objects in {second_phase:.1f} s")
        print(f"bridge peak RSS (first, second process): {rss[0]:.1f} MiB, {max(rss[1:]):.1f} MiB")
        print(f"worker window:                     {WORK_SECS} s, "
              f"{progress['done']} done, {progress['skipped']} skipped, "
              f"{progress['failed']} failed, {progress['pending']} pending")
        print(f"OpenText requests in the window:   {len(times)} over {span:.1f} s "
              f"= {len(times) / span if span else 0:.1f}/s")
        print(f"OpenText max per 1 s window:       {peak} (limit {OT_RATE})")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        for p in sims:
            p.send_signal(signal.SIGTERM)
        for p in sims:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
