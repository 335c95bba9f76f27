"""Soak benchmark of the hub (#15): a simulated fleet polling the real hub process.

Phases, each a fresh server process on loopback and the same simulated fleet
(:mod:`bench.loadsim`: ``--devices`` devices polling every 60 s — heartbeat + desired — with a
start-up spread, plus 5 uploads/s):

1. ``bare``: a bare aiohttp endpoint answering the same routes with ``{}`` (the anchor);
2. ``sqlite``: ``leanloop hub serve`` on the embedded defaults;
3. ``postgres``: the hub on a throwaway PostgreSQL cluster + moto's S3 server;
4. ``replicas``: two hubs on that PostgreSQL + S3; half-way, one is killed (SIGKILL); devices
   retry the other. Counts device requests that failed after that retry.

The simulator runs in this process, each hub in its own; every phase reports the CPU share of
both (``hub_cpu_pct``, ``sim_cpu_pct``, % of one core) and the load average, so a simulator that
became the bottleneck, or a machine busy with other work, shows in the figures.

Prints p50/p99 latency, 5xx count and the ratio to the anchor; writes ``soak.json``. The routine
run is 3 minutes per hub phase (``python -m bench --only soak``); the goal's long run is
``python -m bench --only soak --soak-minutes 30``; ``--quick`` is a smoke run (1,000 devices,
30 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.loadsim import SimConfig, simulate
from hub.testservers import PostgresCluster, S3Server, ServerUnavailable, free_port

__all__ = ["run"]

BARE_APP = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    async def ok(request):
        await request.read()
        return web.json_response({"device_token": "t", "status": "stored", "bundle": None})
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
    """
)


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


class _Proc:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _hub(work: Path, name: str, keys: Path | None, extra: dict[str, Any]) -> tuple[_Proc, str]:
    port = free_port()
    data = work / name
    cfg = {"data_dir": str(data), "port": port, "timestamp_check_interval_s": 3600, **extra}
    if keys is not None:
        cfg["keys_dir"] = str(keys)
    cfg_file = work / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    proc = _Proc(
        [sys.executable, "-m", "leanloop.cli", "hub", "serve", "--config", str(cfg_file)],
        work / f"{name}.log",
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/healthz")
    return proc, url


def _quantiles(text: str, metric: str) -> tuple[int, dict[str, float | None]]:
    """Count and p50/p99/max of a Prometheus histogram (summed over its labels), each as the
    upper bound (ms) of the bucket it falls in."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(metric + "_bucket{"):
            m = re.search(r'le="([^"]+)"', line)
            if m:
                le = float(m.group(1))
                buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    total = buckets.get(float("inf"), 0.0)
    ordered = sorted(buckets.items())

    def at(q: float) -> float | None:
        return next((round(le * 1000, 1) for le, n in ordered if total and n >= q * total), None)

    return int(total), {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


def server_latency(url: str) -> dict[str, Any]:
    """p50/p99 as the hub itself measured them (its Prometheus histogram, summed over routes):
    the upper bound of the bucket each quantile falls in. Free of the simulator's own delays.
    Beside them, the hub's event-loop lag (a stall no handler's own time shows)."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    total, q = _quantiles(text, "leanloop_hub_request_seconds")
    _, lag = _quantiles(text, "leanloop_hub_event_loop_lag_seconds")
    return {
        "server_requests": total,
        "server_p50_ms_le": q["p50"],
        "server_p99_ms_le": q["p99"],
        "hub_lag_p99_ms_le": lag["p99"],
        "hub_lag_max_ms_le": lag["max"],
    }


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measured(pids: list[int], run: Any) -> dict[str, Any]:
    """``run()``'s summary with the CPU share of the hub process(es) and of the simulator (this
    process: it runs nothing else meanwhile), in % of one core, and the load average after."""
    t0, sim0, hub0 = time.monotonic(), _own_cpu_s(), [_cpu_s(p) for p in pids]
    out: dict[str, Any] = run().summary()
    wall = max(1e-9, time.monotonic() - t0)
    out["sim_cpu_pct"] = round(100 * (_own_cpu_s() - sim0) / wall, 1)
    out["hub_cpu_pct"] = round(
        100 * sum(_cpu_s(p) - c for p, c in zip(pids, hub0, strict=True)) / wall, 1
    )
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _sim(hubs: list[str], token: str, devices: int, seconds: float, bare: bool = False) -> Any:
    cfg = SimConfig(
        hubs=hubs,
        enroll_token=token,
        devices=devices,
        duration_s=seconds,
        poll_s=60.0,
        startup_spread_s=min(60.0, seconds / 3),
        uploads_per_s=5.0,
        bare=bare,
    )
    return asyncio.run(simulate(cfg))


def _line(name: str, s: dict[str, Any], anchor: dict[str, Any] | None) -> str:
    ratio = ""
    if anchor and anchor.get("p99_ms") and s.get("p99_ms"):
        ratio = f"  p99 ×{s['p99_ms'] / anchor['p99_ms']:.1f} of bare"
    server = ""
    if s.get("server_p99_ms_le") is not None:
        server = f"  [hub-side p50 ≤{s['server_p50_ms_le']} ms, p99 ≤{s['server_p99_ms_le']} ms]"
    lag = ""
    if s.get("client_lag_p99_ms") is not None:
        lag = f"  loop lag p99/max: simulator {s['client_lag_p99_ms']}/{s['client_lag_max_ms']} ms"
        if s.get("hub_lag_p99_ms_le") is not None:
            lag += f", hub ≤{s['hub_lag_p99_ms_le']}/≤{s['hub_lag_max_ms_le']} ms"
    cpu = ""
    if "sim_cpu_pct" in s:
        cpu = (
            f"  cpu: hub {s['hub_cpu_pct']}%, simulator {s['sim_cpu_pct']}% of a core; "
            f"load {s['load_avg'][0]}"
        )
    return (
        f"{name:9s} {s['requests']:8d} req ({s['rate_per_s']:.0f}/s)  p50 {s['p50_ms']} ms  "
        f"p99 {s['p99_ms']} ms  5xx {s['status_5xx']}  failed {s['failed']} "
        f"({s['failed_fraction']:.3%}){ratio}{server}{lag}{cpu}"
    )


def run(
    out: Path, quick: bool = False, minutes: float = 3.0, devices: int = 10_000
) -> dict[str, Any]:
    """Run the phases; print and return the figures (also ``<out>/soak.json``)."""
    from hub.signing import init_keys

    if quick:
        minutes, devices = 0.5, 1000
    seconds = minutes * 60
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "devices": devices, "seconds_per_phase": seconds, "poll_s": 60, "uploads_per_s": 5,
        "cpus": os.cpu_count(), "load_avg_before": os.getloadavg(),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="leanloop-soak-") as tmp:
        work = Path(tmp)
        keys = work / "keys"
        init_keys(keys)

        port = free_port()
        (work / "bare.py").write_text(BARE_APP)
        bare = _Proc([sys.executable, str(work / "bare.py"), str(port)], work / "bare.log")
        try:
            _wait_http(f"http://127.0.0.1:{port}/")
            anchor_s = min(seconds, 60.0) if not quick else seconds
            report["bare"] = anchor = _measured(
                [bare.proc.pid],
                lambda: _sim([f"http://127.0.0.1:{port}"], "x", devices, anchor_s, bare=True),
            )
        finally:
            bare.stop()
        print(_line("bare", anchor, None), flush=True)

        hub, url = _hub(work, "sqlite", keys, {})
        try:
            token = (work / "sqlite" / "enroll.token").read_text().strip()
            report["sqlite"] = _measured(
                [hub.proc.pid], lambda: _sim([url], token, devices, seconds)
            )
            report["sqlite"].update(server_latency(url))
        finally:
            hub.stop()
        print(_line("sqlite", report["sqlite"], anchor), flush=True)

        try:
            pg = PostgresCluster().start()
            s3 = S3Server().start()
        except ServerUnavailable as e:
            print(f"postgres/replicas: skipped ({e})")
            report["postgres"] = report["replicas"] = {"skipped": str(e)}
        else:
            try:
                report.update(_pg_phases(work, keys, pg, s3, devices, seconds, anchor))
            finally:
                s3.stop()
                pg.stop()
    report["load_avg_after"] = os.getloadavg()
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    return report


def _storage(pg: PostgresCluster, s3: S3Server, url: str) -> dict[str, Any]:
    return {
        "database_url": url,
        "s3": {
            "bucket": s3.create_bucket(),
            "endpoint_url": s3.url,
            "region": "us-east-1",
            "access_key_id": s3.access_key_id,
            "secret_access_key": s3.secret_access_key,
        },
    }


def _pg_phases(
    work: Path,
    keys: Path,
    pg: PostgresCluster,
    s3: S3Server,
    devices: int,
    seconds: float,
    anchor: dict[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hub, url = _hub(work, "pg", keys, _storage(pg, s3, pg.new_database()))
    try:
        token = (work / "pg" / "enroll.token").read_text().strip()
        out["postgres"] = _measured([hub.proc.pid], lambda: _sim([url], token, devices, seconds))
        out["postgres"].update(server_latency(url))
    finally:
        hub.stop()
    print(_line("postgres", out["postgres"], anchor), flush=True)

    storage = _storage(pg, s3, pg.new_database())
    a, url_a = _hub(work, "replica-a", keys, storage)
    b, url_b = _hub(work, "replica-b", None, storage)
    kill_s = min(seconds, 120.0)
    try:
        token = (work / "replica-a" / "enroll.token").read_text().strip()

        async def with_kill() -> Any:
            task = asyncio.create_task(
                simulate(
                    SimConfig(
                        hubs=[url_a, url_b],
                        enroll_token=token,
                        devices=devices,
                        duration_s=kill_s,
                        startup_spread_s=min(60.0, kill_s / 3),
                    )
                )
            )
            await asyncio.sleep(kill_s / 2)
            a.proc.send_signal(signal.SIGKILL)
            return await task

        stats = asyncio.run(with_kill())
        out["replicas"] = {**stats.summary(), "killed_at_s": kill_s / 2, "seconds": kill_s}
        out["replicas"]["survivor"] = server_latency(url_b)
    finally:
        a.stop()
        b.stop()
    print(_line("2 replicas, one killed", out["replicas"], anchor), flush=True)
    return out
