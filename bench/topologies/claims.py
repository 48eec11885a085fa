"""Measure the chapter's claims for stages 2-5, each in one short run, and print a table.

    .venv/bin/python bench/topologies/claims.py [--duration S] [--only NAME,...]

Each claim starts the stage it is about with capacity emulation on the web tier (so a
modelled resource, not this laptop, is the bottleneck), drives it with the load
generator, and reads the figure the claim is about from the report:

- lb_scaling: load_balanced with --web 2 vs --web 1, same emulation: throughput ratio
  (claim >= 1.7);
- cache_offload: cached (shared cache tier) vs replicated with no cache, reads only,
  zipf: cache hit ratio (claim >= 0.90) and the drop in database reads/s (claim >= 5x);
- kill_cache: cached under the same reads, cache-1 killed between two loads: errors
  (claim 0) and the hit ratio before, in the first second after and later (claim: it
  drops by about a third, the node's share, at most; its keys then re-warm elsewhere);
- read_replicas: replicated with --replicas 2 vs --replicas 0, no cache, reads only,
  each store node's capacity emulated (10 ms x 2 queries: 200 queries/s) and the web
  tier's left unbounded, so the store is the bottleneck: read throughput ratio (claim
  >= 1.6; three nodes could give 3x, the laptop's two cores give less);
- kill_primary: replicated under the default mix, store-1 killed: seconds from the kill
  to the promotion (claim <= 5) and the write audit (claim: no acknowledged write lost);
- kill_web: load_balanced under the default mix, web-1 killed: failed GETs (claim 0);
- edge: cached --edge under the default mix: the edge's hit ratio on what it may store,
  the static assets (claim >= 0.95 after the 3 s warm-up).

The figures are from a shared two-core machine: noisy. Run twice before believing a
ratio near its bound. Not run by ``make test`` (bench/ is not a test path).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from loadgen import run_load  # noqa: E402
from topologies import stages  # noqa: E402
from topologies.cli import run_with_faults  # noqa: E402
from topologies.figures import stage_figures  # noqa: E402
from topologies.launcher import Launcher  # noqa: E402
from topologies.scenario import Event, Scenario  # noqa: E402

HERE = Path(__file__).resolve().parent
READS = str(HERE / "reads_zipf.toml")
EMULATION = {"service_time_ms": 10.0, "max_concurrency": 4}


def run(stage: str, profile: str, duration: float, run_dir: Path, scenario=None, **options):
    module = stages.load(stage)
    args = stages.default_options(module)
    vars(args).update({**EMULATION, **options})
    out = io.StringIO()
    with Launcher(module.topology(args), run_dir) as launcher:
        launcher.start()
        report = run_with_faults(launcher, scenario, lambda on_start: run_load(
            launcher.entry_url, profile, duration_s=duration, progress=False, out=out,
            metrics=launcher.metrics_urls(), on_start=on_start), out)  # fmt: skip
        events = [dict(e) for e in launcher.events]
    report["launcher_events"] = events
    return report


def lb_scaling(d, base):
    one = run("load_balanced", "default", d, base / "lb1", web=1)
    two = run("load_balanced", "default", d, base / "lb2", web=2)
    ratio = two["throughput_rps"] / max(one["throughput_rps"], 1e-9)
    return [("2 web / 1 web throughput", f"{two['throughput_rps']:.0f} / "
             f"{one['throughput_rps']:.0f} = {ratio:.2f}x", ">= 1.7x", ratio >= 1.7)]  # fmt: skip


def cache_offload(d, base):
    nocache = run("replicated", READS, d, base / "nocache", cache_mb=0, web=2)
    cached = run("cached", READS, d, base / "cached", web=2)
    hit = cached["stage_figures"]["cache_hit_ratio"] or 0.0
    before = nocache["stage_figures"]["db_reads_per_s"]
    after = cached["stage_figures"]["db_reads_per_s"]
    drop = before / max(after, 1e-9)
    return [("cache hit ratio (zipf 1.1)", f"{hit:.3f}", ">= 0.90", hit >= 0.90),
            ("db reads/s without / with the cache tier", f"{before:.0f} / {after:.0f} = "
             f"{drop:.1f}x", ">= 5x", drop >= 5)]  # fmt: skip


def kill_cache(d, base):
    """Three loads on one cached stage: before the kill (warm), the first second after
    it, and after that; each load's hit ratio is the web tier's own, over that load."""
    module = stages.load("cached")
    args = stages.default_options(module)
    vars(args).update({**EMULATION, "web": 2})

    def phase(launcher, seconds, warmup_s):
        report = run_load(launcher.entry_url, READS, duration_s=seconds, warmup_s=warmup_s,
                          progress=False, out=io.StringIO(), metrics=launcher.metrics_urls())  # fmt: skip
        return report, stage_figures(report)["cache_hit_ratio"] or 0.0

    with Launcher(module.topology(args), base / "killcache") as launcher:
        launcher.start()
        before, hit_before = phase(launcher, d / 2, 3)
        launcher.kill("cache-1")
        first, hit_first = phase(launcher, 1, 0)
        later, hit_later = phase(launcher, d / 2, 0)
    errors = sum(r["errors"]["total"] for r in (before, first, later))
    dip = (hit_before - hit_first) / max(hit_before, 1e-9)
    return [("errors with cache-1 killed", str(errors), "0", errors == 0),
            ("hit ratio: before / 1st s after / later", f"{hit_before:.3f} / {hit_first:.3f} / "
             f"{hit_later:.3f}", "(dip ~1/3)", None),
            ("dip in the first second after the kill", f"{100 * dip:.0f} %", "<= 40 %",
             dip <= 0.4)]  # fmt: skip


STORE_EMULATION = {
    "store_service_time_ms": 10.0,
    "store_max_concurrency": 2,
    "service_time_ms": None,
    "max_concurrency": None,
    "cache_mb": 0,
}


def read_replicas(d, base):
    alone = run("replicated", READS, d, base / "replicas0", replicas=0, web=2, **STORE_EMULATION)
    two = run("replicated", READS, d, base / "replicas2", replicas=2, web=2, **STORE_EMULATION)
    ratio = two["throughput_rps"] / max(alone["throughput_rps"], 1e-9)
    shares = two["stage_figures"].get("store_queries_per_s", {})
    spread = ", ".join(f"{n} {v:.0f}" for n, v in shares.items())
    return [("reads/s with 2 replicas / primary alone", f"{two['throughput_rps']:.0f} / "
             f"{alone['throughput_rps']:.0f} = {ratio:.2f}x", ">= 1.6x", ratio >= 1.6),
            ("store queries/s by node (2 replicas)", spread, "(even)", None)]  # fmt: skip


def kill_primary(d, base):
    at = d / 2
    scenario = Scenario("kill_primary", "", (Event(at, "kill", "store-1"),))
    report = run("replicated", "default", d, base / "killprimary", scenario, web=2)
    failover_log = (base / "killprimary" / "failover.log").read_text().splitlines()
    promoted = [json.loads(line)["ts"] for line in failover_log if '"promoted"' in line]
    killed = next(e["ts"] for e in report["launcher_events"] if e["event"] == "killed")
    seconds = promoted[0] - killed if promoted else float("inf")
    audit = report["write_audit"]
    return [("kill -9 primary -> promotion", f"{seconds:.2f} s", "<= 5 s", seconds <= 5),
            ("acknowledged writes found (semi-sync)", f"{audit['found']}/{audit['acknowledged']}",
             "all", audit["lost"] == 0),
            ("stale reads with read-your-writes", str(audit["stale_reads_with_cookie"]), "0",
             audit["stale_reads_with_cookie"] == 0)]  # fmt: skip


def kill_web(d, base):
    scenario = Scenario("kill_web", "", (Event(d / 2, "kill", "web-1"),))
    report = run("load_balanced", "default", d, base / "killweb", scenario, web=2)
    failed = report["errors"]["by_request"].get("http_5xx", {})
    gets = failed.get("get_user", 0) + failed.get("static_css", 0)
    return [("failed GETs with web-1 killed", str(gets), "0", gets == 0)]


def edge(d, base):
    report = run("cached", "default", d, base / "edge", web=2, edge=True)
    ratio = report["stage_figures"].get("edge_hit_ratio") or 0.0
    return [("edge hit ratio (static assets)", f"{ratio:.3f}", ">= 0.95", ratio >= 0.95)]


CLAIMS = {f.__name__: f for f in (lb_scaling, cache_offload, kill_cache, read_replicas,
                                  kill_primary, kill_web, edge)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--only", default=",".join(CLAIMS))
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / f"claims-{int(time.time())}")
    args = parser.parse_args()
    rows = []
    for name in args.only.split(","):
        print(f"... {name}", file=sys.stderr, flush=True)
        rows += [(name, *row) for row in CLAIMS[name](args.duration, args.run_dir)]
    print(f"{'claim':<14} {'figure':<42} {'measured':<26} {'bound':<12} ok")
    for name, figure, measured, bound, ok in rows:
        mark = "-" if ok is None else ("yes" if ok else "NO")
        print(f"{name:<14} {figure:<42} {measured:<26} {bound:<12} {mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
