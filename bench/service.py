#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Card detection latency of `snapsync start` (issue: attach -> first byte, last byte -> unmount).

Run as root after building (a loop device stands in for the card reader):
    sudo python3 bench/service.py [--rounds 5] [--bin build-bench/snapsync]

Per round: a fresh ext4 card image (mkfs.ext4 -d) of 20 files of 1 MiB, attached with losetup
while the service runs. Measured by polling at 1 ms (standard library only):
  attach -> first byte: from the losetup call to the first copy temporary in the destination;
  last byte -> unmount: from the moment every copy is at its final name to the moment the card's
  mount is gone from /proc/self/mountinfo.
Prints both per round and the medians; targets are under 1 s each."""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return time.monotonic()
        time.sleep(0.001)
    sys.exit(f"bench/service.py: timed out waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mounted_under(base):
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(base + "/")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-bench", "snapsync"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/service.py: needs root (loop devices, mounts)")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"bench/service.py: build first: {args.bin} is missing")
    out = os.path.join(ROOT, "bench", "out")
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="service.", dir=out)
    staging = os.path.join(work, "staging", "DCIM")
    os.makedirs(staging)
    for i in range(20):
        with open(os.path.join(staging, f"IMG_{i:04d}.JPG"), "wb") as f:
            f.write(os.urandom(1 << 20))
    placeholder = os.path.join(work, "placeholder.img")
    with open(placeholder, "wb") as f:
        f.truncate(1 << 20)
    dev = subprocess.run(["losetup", "-f", "--show", placeholder], check=True,
                         capture_output=True, text=True).stdout.strip()
    name = os.path.basename(dev)
    first, last = [], []
    proc = None
    try:
        for rnd in range(args.rounds):
            img = os.path.join(work, f"card{rnd}.img")
            with open(img, "wb") as f:
                f.truncate(64 << 20)
            subprocess.run(["mkfs.ext4", "-q", "-L", f"BENCH{rnd}", "-d",
                            os.path.dirname(staging), img], check=True)
            dest = os.path.join(work, f"dest{rnd}")
            cards = os.path.join(work, "cards")
            conf = os.path.join(work, "config.yaml")
            with open(conf, "w") as f:
                f.write(f"""service:
  database_path: {work}/db{rnd}.sqlite
  web_ui_bind: 127.0.0.1
  web_ui_port: {free_port()}
sd_card:
  devices: ["{name}"]
  mount_base: {cards}
  mount_points: []
unraid:
  enabled: true
  protocol: local
  mount_point: {dest}
""")
            log = open(os.path.join(work, f"service{rnd}.log"), "w")
            proc = subprocess.Popen([args.bin, "--config", conf, "start"], stderr=log,
                                    stdout=subprocess.DEVNULL)
            wait(lambda: "started" in open(log.name).read(), 30, "the service")
            tmp = os.path.join(dest, ".snapsync-tmp")
            subprocess.run(["losetup", "-d", dev], check=True)
            wait(lambda: not os.path.exists(f"/sys/block/{name}/loop"), 30, "the free device")
            t_attach = time.monotonic()
            subprocess.run(["losetup", dev, img], check=True)
            t_first = wait(lambda: os.path.isdir(tmp) and
                           [t for t in os.listdir(tmp) if ".probe." not in t], 30, "a first copy")

            def all_copied():
                n = 0
                for _, _, files in os.walk(dest):
                    n += sum(1 for x in files if x.startswith("IMG_"))
                return n >= 20
            t_done = wait(all_copied, 120, "every copy")
            t_unmounted = wait(lambda: not mounted_under(cards), 60, "the unmount")
            first.append(t_first - t_attach)
            last.append(t_unmounted - t_done)
            print(f"round {rnd + 1}: attach -> first byte {first[-1]:.3f} s, "
                  f"last byte -> unmount {last[-1]:.3f} s", flush=True)
            proc.terminate()
            proc.wait(timeout=60)
            proc = None
            log.close()
            subprocess.run(["losetup", "-d", dev], check=False)
            wait(lambda: not os.path.exists(f"/sys/block/{name}/loop"), 30, "the free device")
            subprocess.run(["losetup", dev, placeholder], check=True)
    finally:
        if proc and proc.poll() is None:
            proc.kill()
        subprocess.run(["losetup", "-d", dev], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    mf, ml = statistics.median(first), statistics.median(last)
    print(f"median attach -> first byte: {mf:.3f} s ({'PASS' if mf < 1 else 'MISS'} < 1 s)")
    print(f"median last byte -> unmount: {ml:.3f} s ({'PASS' if ml < 1 else 'MISS'} < 1 s)")


if __name__ == "__main__":
    main()
