# SPDX-License-Identifier: MIT
"""S3 benchmark: snapsync -> a loopback S3 server (s3rver, the same pinned server the S3 tests
use) against `rclone copy` of the same card to the same server, in the same rounds. Started by
bench/s3.sh. Writes bench/out/s3/results.md.

Both verify: snapsync sends Content-MD5 with every PUT and part and compares the ETag (its
`verify_checksums`), rclone compares the MD5 it computed with the ETag of each object it wrote
(its default). Each run writes under a fresh prefix of the bucket, removed after it; snapsync
gets a fresh database each run (otherwise it would find the card backed up). The page cache is
dropped before every run when /proc/sys/vm/drop_caches is writable. Each run records its wall
time, its CPU time (user + system of the child, from its rusage) and its peak RSS; the server's
own CPU (node) is the same for both and shows as the gap between CPU and wall."""

import os
import shutil
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tests", "integration"))
from cards import drop_caches, make_card  # noqa: E402
from test_s3 import BUCKET, KEY_ID, SECRET, S3rver  # noqa: E402

BIN = os.environ.get("SNAPSYNC_BIN", os.path.join(root, "build-bench", "snapsync"))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "2"))
# BENCH_PART_SIZE=MiB sets snapsync's s3.part_size (default: snapsync's own default)
PART_SIZE = os.environ.get("BENCH_PART_SIZE", "")
OUT = os.path.join(here, "out", "s3")  # bench/out/ is gitignored
RUNS = ("snapsync s3", "rclone copy")


def card_bytes(card):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(card) for f in fs)


def timed(cmd, env):
    """(wall s, CPU s, peak RSS MiB) of one run of cmd."""
    drop_caches()
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {err[-2000:]}")
    return dt, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def run(name, card, work, prefix, server):
    if name == "rclone copy":
        # only this remote's settings: no AWS_* of the machine, no rclone.conf
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        env.update(RCLONE_CONFIG_T_TYPE="s3", RCLONE_CONFIG_T_PROVIDER="Other",
                   RCLONE_CONFIG_T_ENDPOINT=server.url, RCLONE_CONFIG_T_ACCESS_KEY_ID=KEY_ID,
                   RCLONE_CONFIG_T_SECRET_ACCESS_KEY=SECRET,
                   RCLONE_CONFIG_T_FORCE_PATH_STYLE="true", RCLONE_CONFIG="/dev/null")
        return timed(["rclone", "copy", f"{card}/DCIM/100CANON", f"t:{BUCKET}/{prefix}"], env)
    cfg = os.path.join(work, "config.yaml")
    with open(cfg, "w") as f:
        f.write(f"service:\n  database_path: {work}/db\n"
                "unraid:\n  enabled: false\n"
                f"s3:\n  enabled: true\n  endpoint: {server.url}\n  bucket: {BUCKET}\n"
                f"  addressing: path\n  prefix: {prefix}\n  organize_by_date: false\n"
                + (f"  part_size: {PART_SIZE}\n" if PART_SIZE else "") +
                "backup:\n  verify_checksums: true\n"
                f"  concurrent_files: {CONCURRENT}\n")
    os.chmod(cfg, 0o600)
    env = dict(os.environ, S3_ACCESS_KEY_ID=KEY_ID, S3_SECRET_ACCESS_KEY=SECRET)
    return timed([BIN, "--config", cfg, "backup", card], env)


def main():
    os.makedirs(OUT, exist_ok=True)
    card = os.path.join(OUT, f"card-{SCALE:g}")
    make_card(card, int(20 * SCALE), int(40 * SCALE))  # a card of SCALE * 720 MiB
    total = card_bytes(card)
    server = S3rver(OUT)
    results = {k: [] for k in RUNS}
    try:
        for rnd in range(ROUNDS):
            for name in RUNS:
                slug = "".join(ch if ch.isalnum() else "_" for ch in name)
                prefix = f"run-{rnd}-{slug}"
                work = os.path.join(OUT, prefix)
                shutil.rmtree(work, ignore_errors=True)
                os.makedirs(work)
                try:
                    results[name].append(run(name, card, work, prefix, server))
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                    # s3rver keeps an object as files below its folder of the bucket
                    shutil.rmtree(os.path.join(server.data, BUCKET, prefix), ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(server.data, ignore_errors=True)
    lines = [f"card: {total / 2**20:.0f} MiB in {len(os.listdir(card + '/DCIM/100CANON'))} "
             f"files, {ROUNDS} rounds, median; CPU in seconds (user + system of the client) on "
             f"{os.cpu_count()} CPUs; server: s3rver on loopback", "",
             "| run | seconds | MiB/s | client CPU s | CPU s per GiB | peak RSS MiB | walls |",
             "|---|---|---|---|---|---|---|"]
    med = {}
    for k, v in results.items():
        wall = statistics.median(t for t, _, _ in v)
        cpu = statistics.median(c for _, c, _ in v)
        rss = max(r for _, _, r in v)
        med[k] = (wall, cpu, rss)
        walls = " ".join(f"{t:.2f}" for t, _, _ in v)
        lines.append(f"| {k} | {wall:.2f} | {total / 2**20 / wall:.0f} | {cpu:.2f} | "
                     f"{cpu / (total / 2**30):.2f} | {rss:.1f} | {walls} |")
    s, r = med["snapsync s3"], med["rclone copy"]
    lines += ["", f"snapsync / rclone copy: {r[0] / s[0]:.2f}x throughput (target >= 1.0), "
              f"{s[2] / r[2]:.2f}x peak memory, {s[1] / r[1]:.2f}x CPU"]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
