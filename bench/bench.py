#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""SnapSync benchmark driver (Python 3 standard library only); run through bench/run.sh.

1. Throughput: a synthetic card (RAW+JPEG pairs, small JPEGs, two large videos) copied by
   `snapsync backup` (verify_checksums false / true), `cp -a && sync`, `rsync -a`, `rclone copy`,
   in interleaved rounds (round i runs every tool once, starting one tool later than round i-1),
   each into a fresh destination on the same disk, with the page cache dropped before each run.
   Medians of wall time, peak RSS (GNU time %M) and user+sys CPU.
   The card is a filesystem of its own, as a real card is its own device: an ext4 image made
   from the generated folder (mkfs.ext4 -d), attached read-only with direct I/O on a loop device
   and mounted read-only, so every tool reads it for real and none can copy inside one
   filesystem (cp's copy_file_range). Needs root; BENCH_CARD=folder (or no root) reads the
   generated folder itself, on the destination's filesystem, as earlier versions did.
2. Re-run: a card of 10,000 small JPEGs backed up once, then `snapsync backup` again (nothing to
   copy), median of 5 with a cold and with a warm cache.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

MiB = 1 << 20

# Full size (scale 1): 2 x 600 MiB videos + 52 x (25 MiB CR2 + 8 MiB JPG) + 1000 x 200 KiB JPG
# = 3111 MiB, about 3.04 GiB.
VIDEOS, VIDEO_MIB = 2, 600
PAIRS, RAW_MIB, JPG_MIB = 52, 25, 8
SMALL_JPGS, SMALL_KIB = 1000, 200

TOOLS = ["snapsync-verify-off", "snapsync-verify-on", "cp+sync", "rsync", "rclone"]

RSS_TARGET_KIB = 32 * 1024


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log("ERROR: " + msg)
    sys.exit(1)


# ---------------------------------------------------------------- card generation

def write_random(path, size, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
    os.utime(path, (mtime, mtime))


def card_plan(scale):
    """[(relative path, size)] of the synthetic card at this scale."""
    base = datetime.datetime(2024, 5, 1, 9, 0, 0).timestamp()
    plan = []
    pairs = max(1, round(PAIRS * scale))
    smalls = max(1, round(SMALL_JPGS * scale))
    video = max(1, round(VIDEO_MIB * MiB * scale))
    n = 1
    for i in range(pairs):
        d = f"DCIM/{100 + n // 1000}CANON"
        plan.append((f"{d}/IMG_{n % 10000:04d}.CR2", RAW_MIB * MiB, base + n * 600))
        plan.append((f"{d}/IMG_{n % 10000:04d}.JPG", JPG_MIB * MiB, base + n * 600))
        n += 1
    for i in range(smalls):
        d = f"DCIM/{100 + n // 1000}CANON"
        plan.append((f"{d}/IMG_{n % 10000:04d}.JPG", SMALL_KIB * 1024, base + n * 600))
        n += 1
    for i in range(VIDEOS):
        d = f"DCIM/{100 + n // 1000}CANON"
        plan.append((f"{d}/MVI_{n % 10000:04d}.MP4", video, base + n * 600))
        n += 1
    return plan


def small_plan(count):
    base = datetime.datetime(2023, 8, 12, 8, 0, 0).timestamp()
    plan = []
    for n in range(1, count + 1):
        size = 1024 + (n * 7919) % 3073  # 1..4 KiB, deterministic spread
        plan.append((f"DCIM/{100 + n // 1000}CANON/IMG_{n:05d}.JPG", size, base + n * 60))
    return plan


def ensure_card(path, plan, label):
    """Generates the card once; a marker records what was generated so a changed plan regenerates."""
    marker = os.path.join(os.path.dirname(path), os.path.basename(path) + ".done")
    want = json.dumps([[p, s] for p, s, _ in plan])
    if os.path.isdir(path) and os.path.exists(marker):
        with open(marker) as f:
            if f.read() == want:
                log(f"{label}: reusing {path}")
                return
    shutil.rmtree(path, ignore_errors=True)
    total = sum(s for _, s, _ in plan)
    log(f"{label}: generating {len(plan)} files, {total / MiB:.0f} MiB in {path}")
    t0 = time.monotonic()
    for rel, size, mtime in plan:
        write_random(os.path.join(path, rel), size, mtime)
    subprocess.run(["sync"], check=True)
    with open(marker, "w") as f:
        f.write(want)
    log(f"{label}: generated in {time.monotonic() - t0:.0f} s")


class CardImage:
    """The generated card folder as a read-only filesystem of its own (see the module's doc)."""

    def __init__(self, folder, out):
        self.folder = folder
        self.img = os.path.join(out, "card.img")
        self.mnt = os.path.join(out, "card-mnt")
        self.loop = None

    def attach(self):
        marker = self.img + ".done"
        want = open(self.folder + ".done").read()
        if not (os.path.exists(marker) and open(marker).read() == want):
            rm_file(self.img)
            files, size = tree_stats(self.folder)
            # room for the metadata of ext4 (inodes, journal) beyond the bytes themselves
            mib = size // MiB + files // 64 + 128
            log(f"card: making a {mib} MiB ext4 image of it")
            subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "BENCHCARD", "-m", "0", "-d",
                            self.folder, self.img, f"{mib}M"], check=True)
            with open(marker, "w") as f:
                f.write(want)
        self.detach()
        self.loop = subprocess.run(["losetup", "--find", "--show", "--read-only",
                                    "--direct-io=on", self.img], check=True,
                                   capture_output=True, text=True).stdout.strip()
        os.makedirs(self.mnt, exist_ok=True)
        subprocess.run(["mount", "-t", "ext4", "-o", "ro,noatime", self.loop, self.mnt],
                       check=True)
        log(f"card: {self.img} read-only on {self.loop} at {self.mnt}")
        return self.mnt

    def detach(self):
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", self.mnt], check=True)
        if self.loop:
            subprocess.run(["losetup", "-d", self.loop], check=False)
            self.loop = None


def rm_file(path):
    if os.path.lexists(path):
        os.unlink(path)


# ---------------------------------------------------------------- running

class Env:
    def __init__(self, args):
        self.bin = os.path.abspath(args.bin)
        self.out = os.path.abspath(args.out)
        self.root = os.getuid() == 0
        self.can_drop = self._probe_drop()

    def _drop_cmd(self):
        if self.root:
            return ["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"]
        return ["sudo", "-n", "sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"]

    def _probe_drop(self):
        subprocess.run(["sync"], check=True)
        try:
            p = subprocess.run(self._drop_cmd(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            return p.returncode == 0
        except OSError:
            return False

    def cold(self):
        subprocess.run(["sync"], check=True)
        if self.can_drop:
            subprocess.run(self._drop_cmd(), check=True)


def rm(path):
    if os.path.lexists(path):
        shutil.rmtree(path)


def tree_stats(path, skip_hidden_dirs=True):
    files = size = 0
    for d, dirs, names in os.walk(path):
        if skip_hidden_dirs:
            dirs[:] = [x for x in dirs if not x.startswith(".")]
        if d == path:  # snapsync's ASC MHL history (docs/verification.md) is no copy of the card
            dirs[:] = [x for x in dirs if x != "ascmhl"]
        for n in names:
            if n.endswith(".db") or n.startswith("."):
                continue
            files += 1
            size += os.lstat(os.path.join(d, n)).st_size
    return files, size


def write_snapsync_config(path, dest, db, verify, concurrent):
    with open(path, "w") as f:
        f.write(f"""service:
  database_path: {db}
  log_level: warning
immich:
  enabled: false
mqtt:
  enabled: false
unraid:
  enabled: true
  protocol: local
  mount_point: {dest}
  organize_by_date: true
backup:
  concurrent_files: {concurrent}
  verify_checksums: {"true" if verify else "false"}
  max_retries: 0
""")
    os.chmod(path, 0o600)


def timed(cmd, tfile, cwd=None):
    """Runs cmd under GNU time; returns (wall s, user s, sys s, max RSS KiB, stdout)."""
    full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tfile, "--"] + cmd
    t0 = time.monotonic()
    p = subprocess.run(full, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        die(f"{' '.join(cmd)} exited {p.returncode}\nstdout: {p.stdout[-2000:]}\n"
            f"stderr: {p.stderr[-2000:]}")
    with open(tfile) as f:
        last = [ln for ln in f.read().split("\n") if ln.strip()][-1]
    _, user, sys_, rss = last.split()
    return wall, float(user), float(sys_), int(rss), p.stdout


def check_snapsync_json(out, expect_files, what, expect_copied=True):
    try:
        j = json.loads(out)
    except ValueError:
        die(f"{what}: snapsync --json printed no JSON: {out[:500]}")
    failed = j.get("failed", j.get("files_failed", 0))
    if failed or j.get("status") != "completed":
        die(f"{what}: not completed or {failed} files failed: {out[:1000]}")
    done = j.get("files_copied", 0) if expect_copied else j.get("files_skipped", 0)
    if done != expect_files:
        die(f"{what}: expected {expect_files} files "
            f"{'copied' if expect_copied else 'skipped'}: {out[:1000]}")
    return j


class Bench:
    def __init__(self, env, args):
        self.env = env
        self.args = args
        self.out = env.out
        self.card = os.path.join(self.out, "card")
        self.small = os.path.join(self.out, "smallcard")
        self.tfile = os.path.join(self.out, "time.txt")
        self.results = {t: [] for t in TOOLS}

    def dest(self, tool):
        return os.path.join(self.out, "dest-" + tool.replace("+", "-"))

    def run_tool(self, tool, expect_files, expect_bytes):
        dest = self.dest(tool)
        state = os.path.join(self.out, "state-" + tool)
        rm(dest)
        rm(state)
        os.makedirs(state)
        if tool.startswith("snapsync"):
            cfg = os.path.join(state, "config.yaml")
            write_snapsync_config(cfg, dest, os.path.join(state, "snapsync.db"),
                                  tool.endswith("on"), self.args.concurrent)
            cmd = [self.env.bin, "--config", cfg, "backup", self.card, "--json"]
        elif tool == "cp+sync":
            cmd = ["sh", "-c", 'cp -a "$1" "$2" && sync', "sh", self.card, dest]
        elif tool == "rsync":
            cmd = ["rsync", "-a", self.card + "/", dest + "/"]
        elif tool == "rclone":
            cmd = ["rclone", "--config", os.path.join(state, "rclone.conf"), "copy",
                   self.card, dest]
        self.env.cold()
        wall, user, sys_, rss, stdout = timed(cmd, self.tfile, cwd=state)
        if tool.startswith("snapsync"):
            check_snapsync_json(stdout, expect_files, tool)
        files, size = tree_stats(dest)
        if files != expect_files or size != expect_bytes:
            die(f"{tool}: destination has {files} files / {size} bytes, "
                f"expected {expect_files} / {expect_bytes}")
        rm(dest)
        rm(state)
        return {"wall": wall, "user": user, "sys": sys_, "rss_kib": rss}

    def throughput(self):
        plan = card_plan(self.args.scale)
        ensure_card(self.card, plan, "card")
        self.card_layout = "folder on the destination's filesystem"
        if self.args.card == "image":
            self.image = CardImage(self.card, self.out)
            try:
                self.card = self.image.attach()
                self.card_layout = ("ext4 image, read-only loop device (direct I/O), "
                                    "mounted read-only")
            except (OSError, subprocess.CalledProcessError) as e:
                self.image.detach()
                die(f"cannot attach the card image ({e}); BENCH_CARD=folder reads the folder")
        files = len(plan)
        size = sum(s for _, s, _ in plan)
        self.card_files, self.card_bytes = files, size
        n = len(TOOLS)
        for r in range(self.args.rounds):
            order = TOOLS[r % n:] + TOOLS[:r % n]
            for tool in order:
                res = self.run_tool(tool, files, size)
                self.results[tool].append(res)
                log(f"round {r + 1}/{self.args.rounds} {tool:20s} {res['wall']:7.2f} s "
                    f"{size / 1e6 / res['wall']:7.1f} MB/s  RSS {res['rss_kib'] / 1024:6.1f} MiB "
                    f"CPU {res['user'] + res['sys']:6.2f} s")

    def rerun(self):
        plan = small_plan(self.args.small)
        ensure_card(self.small, plan, "small card")
        dest = os.path.join(self.out, "dest-small")
        state = os.path.join(self.out, "state-small")
        rm(dest)
        rm(state)
        os.makedirs(state)
        cfg = os.path.join(state, "config.yaml")
        write_snapsync_config(cfg, dest, os.path.join(state, "snapsync.db"), True,
                              self.args.concurrent)
        cmd = [self.env.bin, "--config", cfg, "backup", self.small, "--json"]
        self.env.cold()
        wall, user, sys_, rss, out = timed(cmd, self.tfile, cwd=state)
        check_snapsync_json(out, len(plan), "small card first backup")
        files, _ = tree_stats(dest)
        if files != len(plan):
            die(f"small card: destination has {files} files, expected {len(plan)}")
        self.small_first = {"wall": wall, "user": user, "sys": sys_, "rss_kib": rss}
        self.small_first_json = out
        log(f"small card first backup: {wall:.2f} s")
        self.small_cold, self.small_warm = [], []
        for i in range(self.args.rounds):
            self.env.cold()
            w, u, s, m, out = timed(cmd, self.tfile, cwd=state)
            check_snapsync_json(out, len(plan), "small card re-run", expect_copied=False)
            self.small_cold.append({"wall": w, "user": u, "sys": s, "rss_kib": m})
            self.small_rerun_json = out
            log(f"small card re-run cold {i + 1}: {w:.3f} s")
        for i in range(self.args.rounds):
            w, u, s, m, out = timed(cmd, self.tfile, cwd=state)
            self.small_warm.append({"wall": w, "user": u, "sys": s, "rss_kib": m})
            log(f"small card re-run warm {i + 1}: {w:.3f} s")
        rm(dest)
        rm(state)

    # ------------------------------------------------------------ report

    def summary(self, tool):
        rs = self.results[tool]
        gb = self.card_bytes / 1e9
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["user"] + r["sys"] for r in rs)
        return {
            "wall": wall,
            "mbps": self.card_bytes / 1e6 / wall,
            "rss_med": statistics.median(r["rss_kib"] for r in rs) / 1024,
            "rss_max": max(r["rss_kib"] for r in rs) / 1024,
            "cpu_per_gb": cpu / gb,
            "user_per_gb": statistics.median(r["user"] for r in rs) / gb,
            "sys_per_gb": statistics.median(r["sys"] for r in rs) / gb,
            "walls": [r["wall"] for r in rs],
        }

    def report(self):
        s = {t: self.summary(t) for t in TOOLS}
        cp = s["cp+sync"]["mbps"]
        lines = []
        add = lines.append
        add("# SnapSync benchmark results")
        add("")
        add(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        add(f"- machine: {self.machine}")
        add(f"- snapsync: {self.env.bin} ({self.rev}), backup.concurrent_files "
            f"{self.args.concurrent}")
        add(f"- scale: {self.args.scale} -> card of {self.card_files} files, "
            f"{self.card_bytes / MiB:.0f} MiB ({self.card_bytes / 1e9:.2f} GB)")
        add(f"- card: {self.card_layout}")
        add(f"- rounds: {self.args.rounds} interleaved, medians reported")
        if self.env.can_drop:
            add("- cold cache: yes (sync; echo 3 > /proc/sys/vm/drop_caches before every run)")
        else:
            add("- cold cache: NO - dropping the page cache was not permitted (not root, no "
                "sudo -n); the card was read from a warm page cache and figures are optimistic")
        add("")
        add("## Copying the card (medians)")
        add("")
        add("| tool | wall s | MB/s | x cp+sync | peak RSS MiB (median / max) | CPU s/GB "
            "(user+sys) | user s/GB | sys s/GB | all walls s |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for t in TOOLS:
            x = s[t]
            add(f"| {t} | {x['wall']:.2f} | {x['mbps']:.1f} | {x['mbps'] / cp:.2f} | "
                f"{x['rss_med']:.1f} / {x['rss_max']:.1f} | {x['cpu_per_gb']:.2f} | "
                f"{x['user_per_gb']:.2f} | {x['sys_per_gb']:.2f} | "
                f"{' '.join(f'{w:.1f}' for w in x['walls'])} |")
        add("")
        add("MB = 10^6 bytes, GB = 10^9 bytes. rsync and rclone commands are run as given "
            "(no sync afterwards), cp is followed by sync; snapsync fsyncs every copy itself.")
        add("")
        cold = statistics.median(r["wall"] for r in self.small_cold)
        warm = statistics.median(r["wall"] for r in self.small_warm)
        add(f"## Re-run of an already backed-up card ({self.args.small} files of 1-4 KiB)")
        add("")
        add("| run | median wall s | all walls s | peak RSS MiB |")
        add("|---|---:|---|---:|")
        add(f"| first backup (cold) | {self.small_first['wall']:.2f} | "
            f"{self.small_first['wall']:.2f} | {self.small_first['rss_kib'] / 1024:.1f} |")
        cold_label = "re-run, cold cache" if self.env.can_drop else "re-run (cache NOT dropped)"
        add(f"| {cold_label} | {cold:.3f} | "
            f"{walls(self.small_cold)} | "
            f"{max(r['rss_kib'] for r in self.small_cold) / 1024:.1f} |")
        add(f"| re-run, warm cache | {warm:.3f} | "
            f"{walls(self.small_warm)} | "
            f"{max(r['rss_kib'] for r in self.small_warm) / 1024:.1f} |")
        add("")
        off, on = s["snapsync-verify-off"], s["snapsync-verify-on"]
        rsync_cpu = s["rsync"]["cpu_per_gb"]
        rss_max = max(off["rss_max"], on["rss_max"],
                      max(r["rss_kib"] for r in self.small_cold + self.small_warm) / 1024,
                      self.small_first["rss_kib"] / 1024)
        targets = [
            ("snapsync verify off >= 0.95x cp+sync",
             f"{off['mbps']:.1f} vs {0.95 * cp:.1f} MB/s ({off['mbps'] / cp:.2f}x)",
             off["mbps"] >= 0.95 * cp),
            ("snapsync verify on >= 1.0x rclone",
             f"{on['mbps']:.1f} vs {s['rclone']['mbps']:.1f} MB/s "
             f"({on['mbps'] / s['rclone']['mbps']:.2f}x)",
             on["mbps"] >= s["rclone"]["mbps"]),
            ("peak RSS <= 32 MiB (max over every snapsync run)",
             f"{rss_max:.1f} MiB", rss_max * 1024 <= RSS_TARGET_KIB),
            ("CPU/GB verify off <= rsync",
             f"{off['cpu_per_gb']:.2f} vs {rsync_cpu:.2f} s/GB", off["cpu_per_gb"] <= rsync_cpu),
            ("CPU/GB verify on <= rsync",
             f"{on['cpu_per_gb']:.2f} vs {rsync_cpu:.2f} s/GB", on["cpu_per_gb"] <= rsync_cpu),
            # the targets of "Halve the CPU per gigabyte" (docs/performance.md)
            ("CPU/GB verify on <= 0.6x rclone",
             f"{on['cpu_per_gb']:.2f} vs {s['rclone']['cpu_per_gb']:.2f} s/GB "
             f"({on['cpu_per_gb'] / s['rclone']['cpu_per_gb']:.2f}x)",
             on["cpu_per_gb"] <= 0.6 * s["rclone"]["cpu_per_gb"]),
            ("CPU/GB verify on <= 2.0x rsync",
             f"{on['cpu_per_gb']:.2f} vs {rsync_cpu:.2f} s/GB ({on['cpu_per_gb'] / rsync_cpu:.2f}x)",
             on["cpu_per_gb"] <= 2.0 * rsync_cpu),
            ("CPU/GB verify off <= 1.2x rsync",
             f"{off['cpu_per_gb']:.2f} vs {rsync_cpu:.2f} s/GB "
             f"({off['cpu_per_gb'] / rsync_cpu:.2f}x)",
             off["cpu_per_gb"] <= 1.2 * rsync_cpu),
            ("snapsync verify on >= 1.2x rclone MB/s",
             f"{on['mbps']:.1f} vs {s['rclone']['mbps']:.1f} MB/s "
             f"({on['mbps'] / s['rclone']['mbps']:.2f}x)",
             on["mbps"] >= 1.2 * s["rclone"]["mbps"]),
            (f"re-run of {self.args.small} files < 1 s ({'cold' if self.env.can_drop else 'cache not dropped'})",
             f"{cold:.3f} s", cold < 1.0),
            (f"re-run of {self.args.small} files < 1 s (warm)", f"{warm:.3f} s", warm < 1.0),
        ]
        add("## Targets")
        add("")
        add("| target | measured | result |")
        add("|---|---|---|")
        for name, measured, ok in targets:
            add(f"| {name} | {measured} | {'PASS' if ok else 'MISS'} |")
        add("")
        add("snapsync --json of the last re-run:")
        add("")
        add("```")
        add(self.small_rerun_json.strip()[:3000])
        add("```")
        text = "\n".join(lines) + "\n"
        with open(os.path.join(self.out, "results.md"), "w") as f:
            f.write(text)
        raw = {"card_bytes": self.card_bytes, "card_files": self.card_files,
               "scale": self.args.scale, "runs": self.results,
               "small_first": self.small_first, "small_cold": self.small_cold,
               "small_warm": self.small_warm, "cold_cache": self.env.can_drop}
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(raw, f, indent=1)
        sys.stdout.write(text)


def walls(runs):
    return " ".join("%.3f" % r["wall"] for r in runs)


def machine(out):
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
    ram = sh("free -g | awk '/Mem:/{print $2}'")
    fs = sh("df -T '%s' | tail -1 | awk '{print $1, $2}'" % out)
    return (f"{platform.node()}, nproc {os.cpu_count()}, {sh('uname -sr')}, {cpu}, RAM {ram} GiB, "
            f"filesystem of bench/out: {fs}; {sh('rsync --version | head -1')}; "
            f"{sh('rclone version | head -1')}; {sh('cp --version | head -1')}")


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1")))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "5")))
    ap.add_argument("--small", type=int, default=int(os.environ.get("BENCH_SMALL", "10000")))
    ap.add_argument("--concurrent", type=int,
                    default=int(os.environ.get("BENCH_CONCURRENT", "2")),
                    help="backup.concurrent_files for snapsync (default 2, the default)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--card", choices=("image", "folder"),
                    default=os.environ.get("BENCH_CARD",
                                           "image" if os.getuid() == 0 else "folder"),
                    help="the card as a read-only filesystem of its own (default as root) or "
                         "the generated folder itself")
    args = ap.parse_args()
    if args.scale <= 0 or args.rounds < 1 or args.small < 1:
        die("scale, rounds and small must be positive")
    if not os.access(args.bin, os.X_OK):
        die(f"{args.bin} is not executable")
    os.makedirs(args.out, exist_ok=True)
    env = Env(args)
    if not env.can_drop:
        log("WARNING: cannot drop the page cache (need root or passwordless sudo); "
            "runs are NOT cold-cache")
    b = Bench(env, args)
    b.machine = machine(args.out)
    b.rev = sh(f"git -C {os.path.dirname(os.path.abspath(__file__))} describe --always --dirty") \
        or "unknown revision"
    t0 = time.monotonic()
    try:
        b.throughput()
    finally:
        if getattr(b, "image", None):
            b.image.detach()
    b.rerun()
    b.report()
    log(f"done in {time.monotonic() - t0:.0f} s; results in {os.path.join(args.out, 'results.md')}")


if __name__ == "__main__":
    main()
