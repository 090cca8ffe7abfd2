# SPDX-License-Identifier: MIT
"""S3 benchmark: snapsync against `rclone copy`, both sending the same card to the same S3 server
(s3rver from tests/s3, as the tests run it, on loopback) in the same run, and snapsync through its
rclone destination (rclone's S3 backend through one rclone rcd) for comparison. Started by
bench/s3.sh. Writes bench/out/s3/results.md and results.json.

Per round (BENCH_ROUNDS, default 3), each run into a prefix of its own, the page cache dropped
before it:
  1. snapsync backup with the s3 destination alone (verify_checksums on, its default);
  2. rclone copy of the card to the bucket (its defaults: it checks each upload's MD5 against
     the ETag);
  3. snapsync backup with the rclone destination alone (rclone's S3 backend);
  4. rclone copy sending every file the way snapsync's s3 destination does (multipart in parts
     of snapsync's s3.part_size: --s3-upload-cutoff and --s3-chunk-size), which tells the
     cost of the request shape on this server apart from the client's.
After every run the bucket must hold exactly the card's files (count and sizes under the run's
prefix), or the bench stops. Reports MB/s (10^6 bytes) and the peak RSS of the process tree's
largest member (wait4's ru_maxrss), medians over the rounds. The target (issue 19): snapsync to S3
at least rclone copy's MB/s with verification on, at a fraction of its memory.

s3rver (Node, files on the local disk) is likely the bottleneck on a small machine: the numbers
compare the clients against the same server, not against a real S3 service."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import cards  # noqa: E402
from test_s3 import BUCKET, KEY_ID, SECRET, S3rver  # noqa: E402

BIN = os.environ.get("SNAPSYNC_BIN", os.path.join(root, "build-bench", "snapsync"))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OUT = os.path.join(here, "out", "s3")
CARD = os.path.join(OUT, "card")
RUNS = ["snapsync s3", "rclone copy", "snapsync rclone", "rclone copy, multipart"]
# BENCH_CONCURRENT=n: snapsync's backup.concurrent_files (default: snapsync's, 2);
# BENCH_PART_SIZE=MiB: snapsync's s3.part_size (default: snapsync's, 8)
CONCURRENT = os.environ.get("BENCH_CONCURRENT", "")
PART_SIZE = os.environ.get("BENCH_PART_SIZE", "")
SNAPSYNC_PART_MIB = 8  # s3.part_size's default (src/dest_s3.c)


def rclone_env(url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update(RCLONE_CONFIG_T_TYPE="s3", RCLONE_CONFIG_T_PROVIDER="Other",
               RCLONE_CONFIG_T_ENDPOINT=url, RCLONE_CONFIG_T_ACCESS_KEY_ID=KEY_ID,
               RCLONE_CONFIG_T_SECRET_ACCESS_KEY=SECRET, RCLONE_CONFIG_T_FORCE_PATH_STYLE="true",
               RCLONE_CONFIG="/dev/null")
    return env


def write_config(path, state, url, run, prefix):
    section = (f"s3:\n  enabled: true\n  endpoint: {url}\n  bucket: {BUCKET}\n"
               f"  prefix: {prefix}\n" + (f"  part_size: {PART_SIZE}\n" if PART_SIZE else "")
               if run == "snapsync s3" else
               f"rclone:\n  enabled: true\n  remote: t:{BUCKET}/{prefix}\n")
    if CONCURRENT:
        section += f"backup:\n  concurrent_files: {CONCURRENT}\n"
    with open(path, "w") as f:
        f.write(f"service:\n  database_path: {state}/snapsync.db\n  log_level: warning\n"
                f"unraid:\n  enabled: false\nmqtt:\n  enabled: false\n{section}")


def timed(cmd, env):
    """(wall seconds, peak RSS in KiB, CPU seconds: user + system of it and its children) of
    cmd, which must succeed."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"bench: {cmd[0]} failed ({p.returncode}):\n{err[-3000:]}")
    return wall, ru.ru_maxrss, ru.ru_utime + ru.ru_stime


def check(url, prefix, expect):
    p = subprocess.run(["rclone", "lsjson", "-R", "--files-only", f"t:{BUCKET}/{prefix}"],
                       env=rclone_env(url), capture_output=True, timeout=600)
    got = sorted(o["Size"] for o in json.loads(p.stdout or b"[]")
                 if not o["Path"].startswith(".snapsync-tmp/"))
    if got != expect:
        sys.exit(f"bench: {prefix}: {len(got)} objects, {len(expect)} files on the card")


def main():
    os.makedirs(OUT, exist_ok=True)
    n_big, n_small = max(1, int(40 * SCALE)), max(1, int(80 * SCALE))
    cards.make_card(CARD, n_big, n_small)
    sizes = sorted(os.path.getsize(os.path.join(d, n))
                   for d, _, names in os.walk(CARD) for n in names)
    total = sum(sizes)
    for stale in ("state", "s3-data"):  # a fresh database and bucket: every run copies all
        shutil.rmtree(os.path.join(OUT, stale), ignore_errors=True)
    server = S3rver(OUT)
    results = {r: [] for r in RUNS}
    try:
        for rnd in range(ROUNDS):
            order = RUNS[rnd % len(RUNS):] + RUNS[:rnd % len(RUNS)]
            for run in order:
                prefix = f"r{rnd}-{run.replace(',', '').replace(' ', '-')}"
                state = os.path.join(OUT, "state", prefix)
                os.makedirs(state, exist_ok=True)
                cards.drop_caches()
                env = rclone_env(server.url)
                if run.startswith("rclone copy"):
                    cmd = ["rclone", "copy", CARD, f"t:{BUCKET}/{prefix}"]
                    if run.endswith("multipart"):
                        part = PART_SIZE or SNAPSYNC_PART_MIB
                        cmd += [f"--s3-upload-cutoff={part}Mi", f"--s3-chunk-size={part}Mi"]
                else:
                    conf = os.path.join(state, "config.yaml")
                    write_config(conf, state, server.url, run, prefix)
                    env.update(S3_ACCESS_KEY_ID=KEY_ID, S3_SECRET_ACCESS_KEY=SECRET)
                    cmd = [BIN, "--config", conf, "backup", CARD]
                wall, rss, cpu = timed(cmd, env)
                check(server.url, prefix, sizes)
                results[run].append({"wall_s": wall, "mb_s": total / 1e6 / wall, "rss_kib": rss,
                                     "cpu_s": cpu})
                print(f"bench: round {rnd + 1} {run}: {total / 1e6 / wall:.1f} MB/s, "
                      f"peak RSS {rss / 1024:.0f} MiB", file=sys.stderr)
    finally:
        server.stop()
    lines = [f"# S3: snapsync against rclone copy ({len(sizes)} files, {total / 1e6:.0f} MB, "
             f"{ROUNDS} rounds, s3rver on loopback)", "",
             "| run | MB/s (median) | peak RSS MiB (median) | client CPU s (median) |",
             "|---|---|---|---|"]
    for run in RUNS:
        mb = statistics.median(x["mb_s"] for x in results[run])
        rss = statistics.median(x["rss_kib"] for x in results[run]) / 1024
        cpu = statistics.median(x["cpu_s"] for x in results[run])
        lines.append(f"| {run} | {mb:.1f} | {rss:.0f} | {cpu:.2f} |")
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
