#!/usr/bin/env python3
"""Backfill benchmark: a 50,000-product catalogue against both simulators.

Measures, in one run, with the real binary (`xecm-bridge serve` on SQLite):
  1. enumeration and enqueueing of every launch-ready product through `POST /api/v1/backfills`
     (time from start to `enumerated`, as the store records it), with a `kill -9` of the bridge
     in the middle and a restart: the restarted bridge takes the backfill over from its cursor;
  2. that every product was enqueued exactly once (`found` = `enqueued` = 4ALLPORTAL's total);
  3. the bridge's peak resident memory (VmHWM of both bridge processes);
  4. the OpenText request rate while the worker runs the backfilled launches, per one-second
     window of the OpenText simulator's request log, against `opentext.max_requests_per_sec`;
  5. with BENCH_FINISH=1 only: after that window, the worker runs until every backfilled launch
     is done (a progress line every 30 s), then one check from the outside, after the fact:
     the OpenText simulator's state holds exactly one launch workspace per launch-ready product
     of the 4ALLPORTAL simulator (none missing, none duplicated), and the bridge's events API
     shows every backfilled event done and none dead; with the time to finish and the OpenText
     requests from the start of the window to the end. Exit status 1 if the check fails.

Usage: scripts/bench_backfill.py [path/to/xecm-bridge]   (default: target/debug/xecm-bridge)
Environment: BENCH_PRODUCTS (50000), BENCH_OT_RATE (20), BENCH_WORK_SECS (60),
BENCH_FINISH (unset: stop after the window; 1: run to completion, e.g. with BENCH_OT_RATE=1000),
BENCH_FINISH_SECS (10800: the bound on the wait for completion). With BENCH_FINISH=1 every
flow but `launch` is disabled, so that the OpenText work is the backfill's alone (otherwise the
reconciliation feed also hands the generated products to the other flows).
Figures go to stdout; BENCHMARKS.md records them. Every wait is bounded.
"""

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "xecm-bridge")
PRODUCTS = int(os.environ.get("BENCH_PRODUCTS", "50000"))
OT_RATE = int(os.environ.get("BENCH_OT_RATE", "20"))
WORK_SECS = int(os.environ.get("BENCH_WORK_SECS", "60"))
FINISH = os.environ.get("BENCH_FINISH", "") == "1"
FINISH_SECS = int(os.environ.get("BENCH_FINISH_SECS", "10800"))
PROGRESS_EVERY = 30
TOKEN = "bench-admin-token-0123456789"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DEADLINE = 600


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(method, url, body=None, token=TOKEN, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
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


def max_per_second(times):
    """The most arrival times (sorted, ms) within any one-second window [t, t + 1 s)."""
    peak = 0
    j = 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + 1000:
            j += 1
        peak = max(peak, j - i)
    return peak


def request_times(ot):
    """The arrival times (ms, sorted) of every API request in the OpenText simulator's log."""
    # A whole run's log is large: give the simulator time to serialise it.
    log_ = http("GET", f"{ot}/_sim/requests", token=None, timeout=600)
    records = log_ if isinstance(log_, list) else log_.get("requests", [])
    return sorted(r["at_ms"] for r in records)


def wait_for_finish(bridge, bid, t_start):
    """Lets the worker run until no backfilled event is pending, within FINISH_SECS; prints
    done / total / rate every PROGRESS_EVERY seconds. Returns the last progress and the time
    since the backfill started."""
    end = time.monotonic() + FINISH_SECS
    last_line, last_done = time.monotonic(), None
    while True:
        progress = http("GET", f"{bridge}/api/v1/backfills/{bid}")
        now = time.monotonic()
        if progress["state"] == "enumerated" and progress["pending"] == 0:
            return progress, now - t_start
        if now > end:
            sys.exit(f"timed out after {FINISH_SECS} s waiting for the backfill to finish: "
                     f"{progress}")
        if last_done is None:
            last_done = progress["done"]
        if now - last_line >= PROGRESS_EVERY:
            rate = (progress["done"] - last_done) / (now - last_line)
            print(f"  {now - t_start:6.0f} s: {progress['done']} / {progress['total']} done, "
                  f"{progress['failed']} failed, {rate:.1f} launches/s", flush=True)
            last_line, last_done = now, progress["done"]
        time.sleep(1)


def launch_mapping(config):
    """(ext_system_id, bo_type) the launch flow registers its workspaces under."""
    with open(config, "rb") as f:
        cfg = tomllib.load(f)
    ext = os.environ.get("XECM_BRIDGE__OPENTEXT__EXT_SYSTEM_ID",
                         cfg.get("opentext", {}).get("ext_system_id", "4ALLPORTAL"))
    return ext, cfg["flows"]["launch"]["workspace"]["bo_type"]


def launch_ready_products(ap):
    """The ids of every product the 4ALLPORTAL simulator holds with status launch_ready."""
    products = http("GET", f"{ap}/_sim/state", token=None, timeout=600)["objects"].get("product", {})
    return {pid for pid, obj in products.items()
            if any(v.get("value") == "launch_ready" for v in obj.get("status", []))}


def launch_workspaces(ot, ext, bo_type):
    """How many workspaces of the OpenText simulator are registered under each product id."""
    nodes = http("GET", f"{ot}/_sim/state", token=None, timeout=600)["nodes"]
    counts = collections.Counter()
    for node in nodes:
        for ref in (node.get("workspace") or {}).get("references", []):
            if ref["ext_system_id"] == ext and ref["bo_type"] == bo_type:
                counts[ref["bo_id"]] += 1
    return counts, len(nodes)


def backfilled_events(bridge, bid):
    """The state of every event the backfill stored (ids `backfill:<bid>:<object key>`), counted,
    and when the last of them changed (unix ms), read page by page from the admin API."""
    prefix = f"backfill:{bid}:"
    states = collections.Counter()
    last_change = 0
    after = None
    while True:
        query = {"kind": "resync", "flow": "launch", "limit": 500}
        if after:
            query["after"] = after
        page = http("GET", f"{bridge}/api/v1/events?{urllib.parse.urlencode(query)}")
        for event in page["events"]:
            if event["source_event_id"].startswith(prefix):
                states[event["state"]] += 1
                last_change = max(last_change, event.get("updated_at") or 0)
        after = page.get("next_cursor")
        if not after:
            return states, last_change


def finish(bridge, ot, ap, bid, config, t_start, times_before):
    """BENCH_FINISH: runs the backfill to completion, then checks its outcome once. Returns
    whether every product has exactly one launch workspace and every event is done.
    `times_before`: the OpenText requests from the simulator's start to the window's."""
    print(f"running the backfill to completion (bound {FINISH_SECS} s) ...", flush=True)
    progress, seen_secs = wait_for_finish(bridge, bid, t_start)
    times = sorted(times_before + request_times(ot))
    ext, bo_type = launch_mapping(config)
    wanted = launch_ready_products(ap)
    workspaces, node_count = launch_workspaces(ot, ext, bo_type)
    missing = sorted(wanted - workspaces.keys())
    duplicated = sorted(pid for pid, n in workspaces.items() if n > 1)
    unexpected = sorted(workspaces.keys() - wanted)
    states, last_change = backfilled_events(bridge, bid)
    dead_letters = http("GET", f"{bridge}/api/v1/status")["dead_letters"]
    span = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0
    # From the store: the backfill's creation to the last change of one of its events (the
    # polling above only bounds it from above).
    finish_secs = (last_change - progress["created_at"]) / 1000
    print(f"time to finish:                    {finish_secs:.1f} s from the backfill's start to "
          f"its last event done (seen done {seen_secs:.1f} s after the start)")
    print(f"backfill at the end:               {progress['done']} done, "
          f"{progress['skipped']} skipped, {progress['failed']} failed, "
          f"{progress['pending']} pending of {progress['enqueued']} enqueued")
    print(f"OpenText requests in all:          {len(times)} over {span:.1f} s "
          f"= {len(times) / span if span else 0:.1f}/s, max per 1 s window "
          f"{max_per_second(times)} (limit {OT_RATE})")
    print(f"launch-ready products (4ALLPORTAL): {len(wanted)}")
    print(f"launch workspaces (OpenText):      {sum(workspaces.values())} for "
          f"{len(workspaces)} products, {node_count} nodes in all")
    print(f"duplicates found:                  {len(duplicated)} {duplicated[:5]}")
    print(f"missing:                           {len(missing)} {missing[:5]}")
    print(f"not launch-ready but a workspace:  {len(unexpected)} {unexpected[:5]}")
    print(f"backfilled events by state:        {dict(sorted(states.items()))} "
          f"(dead letters in the status: {dead_letters})")
    all_done = (states.get("done", 0) == progress["enqueued"] == sum(states.values())
                and states.get("dead", 0) == 0 and dead_letters == 0)
    ok = not missing and not duplicated and not unexpected and all_done
    print(f"every product exactly once, every event done: {ok}")
    return ok


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
    if FINISH:
        for other in ("family", "account", "change", "compliance", "partner", "archival"):
            env[f"XECM_BRIDGE__FLOWS__{other.upper()}__ENABLED"] = "false"
    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config",
                          "example.toml")
    log = open(os.path.join(work, "bridge.log"), "w")

    def start():
        p = subprocess.Popen([BIN, "serve", "--config", config], env=env, stdout=log, stderr=log)
        wait_until("readiness", lambda: urllib.request.urlopen(f"{bridge}/readyz").status == 200)
        return p

    proc = None
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
        # A small catalogue (a few hundred products) can be enumerated completely before the
        # kill: there is nothing left to take over then, and `enumerated` ends the wait.
        resumed = wait_until("the takeover", lambda: (
            lambda p: p["found"] if p["found"] > killed or p["state"] == "enumerated" else None)(
            http("GET", f"{bridge}/api/v1/backfills/{bid}")))
        takeover = time.monotonic() - t_kill
        t_resumed = time.monotonic()
        done = wait_until("enumeration after the restart", lambda: (
            lambda p: p if p["state"] == "enumerated" else None)(
            http("GET", f"{bridge}/api/v1/backfills/{bid}")))
        second_phase = time.monotonic() - t_resumed
        rss.append(peak_rss_mib(proc.pid))
        enumerate_secs = (done["updated_at"] - done["created_at"]) / 1000
        # To count the whole run with BENCH_FINISH, keep what the clearing below drops.
        times_before = request_times(ot) if FINISH else []
        http("DELETE", f"{ot}/_sim/requests", token=None)
        time.sleep(WORK_SECS)
        progress = http("GET", f"{bridge}/api/v1/backfills/{bid}")
        rss.append(peak_rss_mib(proc.pid))
        times = request_times(ot)
        peak = max_per_second(times)
        span = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0
        print(f"products generated:                {PRODUCTS}")
        print(f"launch-ready in 4ALLPORTAL (total): {done['total']}")
        print(f"found when killed (kill -9):       >= {killed}"
              + (" (enumeration had ended before the kill)" if killed == done["found"] else ""))
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
        ok = not FINISH or finish(bridge, ot, ap, bid, config, t_start, times_before)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if not ok:
            sys.exit(1)
    finally:
        if proc is not None and proc.poll() is None:  # a bounded wait ran out: stop the bridge too
            proc.kill()
        for p in sims:
            p.send_signal(signal.SIGTERM)
        for p in sims:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
