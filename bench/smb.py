"""SMB benchmark: snapsync -> a loopback smbd against `smbclient -c 'mput'` of the same card, and
snapsync to SMB + a local folder at once against SMB alone. Started by bench/smb.sh (as root:
smbd and its test user come from tests/integration/smbd.py). Writes bench/out/smb/results.md.

Each round backs up to a fresh folder of the share; the page cache is dropped before every run
(so the card is read from disk each time) when /proc/sys/vm/drop_caches is writable."""

import os
import shutil
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import smbd  # noqa: E402

BIN = os.environ.get("SNAPSYNC_BIN", os.path.join(root, "build-bench", "snapsync"))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OUT = os.path.join(here, "out", "smb")  # bench/out/ is gitignored


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def make_card(card):
    if os.path.exists(card + ".done"):
        return
    shutil.rmtree(card, ignore_errors=True)
    os.makedirs(f"{card}/DCIM/100CANON")
    sizes = [24 << 20] * int(40 * SCALE) + [6 << 20] * int(80 * SCALE)
    for i, size in enumerate(sizes):
        with open(f"{card}/DCIM/100CANON/IMG_{i:04d}.CR3", "wb") as f:
            f.write(os.urandom(size))
    open(card + ".done", "w").close()


def card_bytes(card):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(card) for f in fs)


def timed(cmd, env):
    drop_caches()
    t = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {p.stderr[-2000:]}")
    return dt


def main():
    os.makedirs(OUT, exist_ok=True)
    card = os.path.join(OUT, "card")
    make_card(card)
    total = card_bytes(card)
    server = smbd.Smbd(OUT)
    server.start()
    env = dict(os.environ, UNRAID_USERNAME=smbd.USER, UNRAID_PASSWORD=smbd.PASSWORD)
    results = {"snapsync smb": [], "snapsync smb, no verify": [], "smbclient mput": [],
               "rclone copy": [], "snapsync local": [], "snapsync smb+local": []}
    # rclone's SMB backend, configured through the environment (the password obscured as
    # rclone wants it)
    obscured = subprocess.run(["rclone", "obscure", smbd.PASSWORD], check=True,
                              capture_output=True, text=True).stdout.strip()
    rclone_env = dict(os.environ, RCLONE_CONFIG_SNAP_TYPE="smb", RCLONE_CONFIG_SNAP_HOST="127.0.0.1",
                      RCLONE_CONFIG_SNAP_PORT=str(server.port), RCLONE_CONFIG_SNAP_USER=smbd.USER,
                      RCLONE_CONFIG_SNAP_PASS=obscured)
    try:
        for rnd in range(ROUNDS):
            for name in results:
                slug = "".join(ch if ch.isalnum() else "_" for ch in name)
                work = os.path.join(OUT, f"run-{rnd}-{slug}")
                shutil.rmtree(work, ignore_errors=True)
                os.makedirs(work)
                sub = os.path.basename(work)
                if name == "smbclient mput":
                    server.makedirs(os.path.join(server.share_dir("photos"), sub))
                    cmd = ["smbclient", "-p", str(server.port), "//127.0.0.1/photos",
                           "-U", f"{smbd.USER}%{smbd.PASSWORD}", "-c",
                           f"cd {sub}; lcd {card}/DCIM/100CANON; prompt off; mput *"]
                    results[name].append(timed(cmd, os.environ))
                    continue
                if name == "rclone copy":
                    cmd = ["rclone", "copy", f"{card}/DCIM/100CANON", f"snap:photos/{sub}"]
                    results[name].append(timed(cmd, rclone_env))
                    continue
                smb = name.startswith("snapsync smb")
                local = name in ("snapsync local", "snapsync smb+local")
                cfg = os.path.join(work, "config.yaml")
                with open(cfg, "w") as f:
                    f.write(f"service:\n  database_path: {work}/db\n"
                            f"unraid:\n  enabled: {'true' if smb else 'false'}\n"
                            f"  protocol: smb\n  host: 127.0.0.1:{server.port}\n"
                            f"  share: photos\n  path: {sub}\n"
                            f"local:\n  enabled: {'true' if local else 'false'}\n"
                            f"  path: {work}/local\n"
                            "backup:\n  verify_checksums: "
                            f"{'false' if 'no verify' in name else 'true'}\n")
                os.chmod(cfg, 0o600)
                results[name].append(timed([BIN, "--config", cfg, "backup", card], env))
    finally:
        server.cleanup()
    lines = [f"card: {total / 2**20:.0f} MiB in {len(os.listdir(card + '/DCIM/100CANON'))} "
             f"files, {ROUNDS} rounds, median", "",
             "| run | seconds | MiB/s |", "|---|---|---|"]
    med = {k: statistics.median(v) for k, v in results.items()}
    for k, v in med.items():
        lines.append(f"| {k} | {v:.2f} | {total / 2**20 / v:.0f} |")
    peer = min(med["smbclient mput"], med["rclone copy"])  # the faster peer's time
    lines += ["", f"snapsync smb / faster peer: {peer / med['snapsync smb']:.2f}x "
              "throughput (target >= 0.9)",
              f"snapsync smb without read-back / faster peer: "
              f"{peer / med['snapsync smb, no verify']:.2f}x throughput",
              f"smb+local / slower single: "
              f"{med['snapsync smb+local'] / max(med['snapsync smb'], med['snapsync local']):.2f}x "
              "time (target <= 1.15)"]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
