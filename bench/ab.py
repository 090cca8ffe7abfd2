#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A/B of `snapsync backup` variants on bench/run.sh's synthetic card (Python standard library).

Each variant is a name and environment settings for the same binary, e.g.
`--variant openssl:SNAPSYNC_X=0 --variant md5mb:SNAPSYNC_X=1`. Rounds are interleaved (round i
runs every variant once, starting one variant further along than round i-1), each run into a
fresh destination and database with the page cache dropped first (as root); medians of wall
time and of user and system CPU per GB (10^9 bytes), as bench/run.sh reports them.

  python3 bench/ab.py --bin build-bench/snapsync --scale 0.3 --rounds 5 --verify on \\
      --variant a:VAR=0 --variant b:VAR=1
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "out"))
    ap.add_argument("--scale", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--verify", choices=["on", "off"], default="on")
    ap.add_argument("--variant", action="append", required=True,
                    help="name[:KEY=VALUE[,KEY=VALUE...]]")
    args = ap.parse_args()
    variants = []
    for v in args.variant:
        name, _, settings = v.partition(":")
        env = dict(s.split("=", 1) for s in settings.split(",") if s)
        variants.append((name, env))

    env = bench.Env(args)
    card = os.path.join(env.out, "card")
    plan = bench.card_plan(args.scale)
    bench.ensure_card(card, plan, "card")
    files, size = len(plan), sum(s for _, s, _ in plan)
    tfile = os.path.join(env.out, "ab-time.txt")
    results = {name: [] for name, _ in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for name, venv in order:
            dest = os.path.join(env.out, "dest-ab")
            state = os.path.join(env.out, "state-ab")
            bench.rm(dest)
            bench.rm(state)
            os.makedirs(state)
            cfg = os.path.join(state, "config.yaml")
            bench.write_snapsync_config(cfg, dest, os.path.join(state, "snapsync.db"),
                                        args.verify == "on", args.concurrent)
            cmd = ["env"] + [f"{k}={v}" for k, v in venv.items()] + [
                env.bin, "--config", cfg, "backup", card, "--json"]
            env.cold()
            wall, user, sys_, rss, out = bench.timed(cmd, tfile, cwd=state)
            bench.check_snapsync_json(out, files, name)
            got_files, got_size = bench.tree_stats(dest)
            if (got_files, got_size) != (files, size):
                bench.die(f"{name}: destination has {got_files} files / {got_size} bytes")
            bench.rm(dest)
            bench.rm(state)
            results[name].append((wall, user, sys_, rss))
            bench.log(f"round {r + 1}/{args.rounds} {name:12s} {wall:6.2f} s "
                      f"user {user:5.2f} sys {sys_:5.2f} RSS {rss / 1024:5.1f} MiB")
    gb = size / 1e9
    print(f"card: {files} files, {size / 1e6:.0f} MB; verify {args.verify}, "
          f"concurrent_files {args.concurrent}, {args.rounds} interleaved rounds, medians")
    print("| variant | wall s | MB/s | user s/GB | sys s/GB | CPU s/GB | CPU s/GB, every round |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, _ in variants:
        runs = results[name]
        wall = statistics.median(x[0] for x in runs)
        user = statistics.median(x[1] for x in runs) / gb
        sys_ = statistics.median(x[2] for x in runs) / gb
        cpu = statistics.median((x[1] + x[2]) for x in runs) / gb
        every = " ".join(f"{(x[1] + x[2]) / gb:.2f}" for x in runs)
        print(f"| {name} | {wall:.2f} | {size / 1e6 / wall:.0f} | {user:.2f} | {sys_:.2f} | "
              f"{cpu:.2f} | {every} |")


if __name__ == "__main__":
    main()
