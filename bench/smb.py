# SPDX-License-Identifier: MIT
"""SMB benchmark: snapsync -> a loopback smbd against `smbclient -c 'mput'` and `rclone copy` of
the same card, and snapsync to SMB + a local folder at once against SMB alone. Started by
bench/smb.sh (as root: smbd and its test user come from tests/integration/smbd.py). Writes
bench/out/smb/results.md.

Each round backs up to a fresh folder of the share, removed after the run; the page cache is
dropped before every run
(so the card is read from disk each time) when /proc/sys/vm/drop_caches is writable. Besides the
wall time, each run records the CPU time of the client (snapsync, smbclient or rclone: user +
system, from the rusage of the child) and of the server (smbd and the children it reaped, from
/proc), so a run that is CPU-bound on the machine shows as such."""

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import smbd  # noqa: E402
from cards import drop_caches, make_card  # noqa: E402

BIN = os.environ.get("SNAPSYNC_BIN", os.path.join(root, "build-bench", "snapsync"))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OUT = os.path.join(here, "out", "smb")  # bench/out/ is gitignored
# BENCH_ONLY="snapsync smb;smbclient mput" runs only those (quicker while working on one of them;
# ';' separates, since a run's name may hold a comma)
ONLY = [n.strip() for n in os.environ.get("BENCH_ONLY", "").split(";") if n.strip()]
# BENCH_COMPARE_BIN=path adds each snapsync run made with that binary too ("... [compare]"),
# interleaved in the same rounds, so a change is measured against the old build under the same
# load
COMPARE_BIN = os.environ.get("BENCH_COMPARE_BIN", "")
# BENCH_LINK=1gbit puts smbd behind a link of that rate each way (tc tbf on a veth pair, see
# tests/integration/smbd.py) instead of plain loopback: a NAS on a LAN, where the network, not
# the CPU, is the limit
LINK = os.environ.get("BENCH_LINK", "")
# BENCH_CONCURRENT=n sets snapsync's backup.concurrent_files (default 2, snapsync's default)
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "2"))


def card_bytes(card):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(card) for f in fs)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def smbd_cpu(server):
    """CPU seconds of smbd so far: its own and that of the children it has reaped (one per client
    connection; they exit when the client disconnects)."""
    with open(f"/proc/{server.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def smbd_children(server):
    try:
        with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
            return len(f.read().split())
    except OSError:
        return 0


def timed(cmd, env, server):
    """(wall s, client CPU s, smbd CPU s) of one run."""
    drop_caches()
    idle = smbd_children(server)
    c0, s0 = children_cpu(), smbd_cpu(server)
    t = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {p.stderr[-2000:]}")
    c1 = children_cpu()
    # the per-client smbd children exit once the client has gone; their CPU counts when reaped
    deadline = time.monotonic() + 10
    while smbd_children(server) > idle and time.monotonic() < deadline:
        time.sleep(0.05)
    return dt, c1 - c0, smbd_cpu(server) - s0


def run(name, card, work, sub, server, env, rclone_env):
    """One timed run of `name` into the share's folder `sub` (and work/local)."""
    if name == "smbclient mput":
        server.makedirs(os.path.join(server.share_dir("photos"), sub))
        cmd = ["smbclient", "-p", str(server.port), f"//{server.host}/photos",
               "-U", f"{smbd.USER}%{smbd.PASSWORD}", "-c",
               f"cd {sub}; lcd {card}/DCIM/100CANON; prompt off; mput *"]
        return timed(cmd, os.environ, server)
    if name == "rclone copy":
        cmd = ["rclone", "copy", f"{card}/DCIM/100CANON", f"snap:photos/{sub}"]
        return timed(cmd, rclone_env, server)
    if name == "rclone copy + check":
        # a peer that verifies too: rclone's SMB backend has no hashes, so `check --download`
        # reads every copy back and compares it with the card
        src, dst = f"{card}/DCIM/100CANON", f"snap:photos/{sub}"
        cmd = ["sh", "-c", 'rclone copy "$1" "$2" && rclone check --download "$1" "$2"', "sh",
               src, dst]
        return timed(cmd, rclone_env, server)
    binary = COMPARE_BIN if name.endswith(" [compare]") else BIN
    base = name.removesuffix(" [compare]")
    smb = base.startswith("snapsync smb")
    local = base in ("snapsync local", "snapsync smb+local")
    cfg = os.path.join(work, "config.yaml")
    with open(cfg, "w") as f:
        f.write(f"service:\n  database_path: {work}/db\n"
                f"unraid:\n  enabled: {'true' if smb else 'false'}\n"
                f"  protocol: smb\n  host: {server.host}:{server.port}\n"
                f"  share: photos\n  path: {sub}\n"
                f"local:\n  enabled: {'true' if local else 'false'}\n"
                f"  path: {work}/local\n"
                "backup:\n  verify_checksums: "
                f"{'false' if 'no verify' in base else 'true'}\n"
                f"  concurrent_files: {CONCURRENT}\n")
    os.chmod(cfg, 0o600)
    return timed([binary, "--config", cfg, "backup", card], env, server)


def main():
    os.makedirs(OUT, exist_ok=True)
    card = os.path.join(OUT, f"card-{SCALE:g}")
    make_card(card, int(40 * SCALE), int(80 * SCALE))  # A card of SCALE * 1440 MiB
    total = card_bytes(card)
    server = smbd.Smbd(OUT, link=LINK or None)
    server.start()
    env = dict(os.environ, UNRAID_USERNAME=smbd.USER, UNRAID_PASSWORD=smbd.PASSWORD)
    results = {"snapsync smb": [], "snapsync smb, no verify": [], "smbclient mput": [],
               "rclone copy": [], "rclone copy + check": [], "snapsync local": [],
               "snapsync smb+local": []}
    # rclone's SMB backend, configured through the environment (the password obscured as
    # rclone wants it)
    obscured = subprocess.run(["rclone", "obscure", smbd.PASSWORD], check=True,
                              capture_output=True, text=True).stdout.strip()
    rclone_env = dict(os.environ, RCLONE_CONFIG_SNAP_TYPE="smb",
                      RCLONE_CONFIG_SNAP_HOST=server.host, RCLONE_CONFIG_SNAP_PORT=str(server.port),
                      RCLONE_CONFIG_SNAP_USER=smbd.USER, RCLONE_CONFIG_SNAP_PASS=obscured)
    if ONLY:
        results = {k: v for k, v in results.items() if k in ONLY}
    if COMPARE_BIN:
        paired = {}
        for k, v in results.items():
            paired[k] = v
            if k.startswith("snapsync"):
                paired[k + " [compare]"] = []
        results = paired
    try:
        for rnd in range(ROUNDS):
            for name in results:
                slug = "".join(ch if ch.isalnum() else "_" for ch in name)
                work = os.path.join(OUT, f"run-{rnd}-{slug}")
                shutil.rmtree(work, ignore_errors=True)
                os.makedirs(work)
                sub = os.path.basename(work)
                try:
                    results[name].append(run(name, card, work, sub, server, env, rclone_env))
                finally:
                    # the copies go at once: a full-scale run with BENCH_COMPARE_BIN would
                    # otherwise keep tens of GB
                    shutil.rmtree(work, ignore_errors=True)
                    shutil.rmtree(os.path.join(server.share_dir("photos"), sub),
                                  ignore_errors=True)
    finally:
        server.cleanup()
    lines = [f"card: {total / 2**20:.0f} MiB in {len(os.listdir(card + '/DCIM/100CANON'))} "
             f"files, {ROUNDS} rounds, median; CPU in seconds (user + system) on "
             f"{os.cpu_count()} CPUs; link: {LINK or 'loopback'}", "",
             "| run | seconds | MiB/s | client CPU | smbd CPU | CPU / wall | walls (rounds) |",
             "|---|---|---|---|---|---|---|"]
    med = {k: statistics.median(t for t, _, _ in v) for k, v in results.items()}
    for k, v in med.items():
        cc = statistics.median(c for _, c, _ in results[k])
        sc = statistics.median(s for _, _, s in results[k])
        walls = " ".join(f"{t:.2f}" for t, _, _ in results[k])
        lines.append(f"| {k} | {v:.2f} | {total / 2**20 / v:.0f} | {cc:.2f} | {sc:.2f} | "
                     f"{(cc + sc) / v:.2f} | {walls} |")
    peers = [med[k] for k in ("smbclient mput", "rclone copy") if k in med]
    peer = min(peers) if peers else None  # the faster peer's time
    for tag in ("", " [compare]") if COMPARE_BIN else ("",):
        lines.append("")
        if peer and "snapsync smb" + tag in med:
            lines.append(f"snapsync smb{tag} / faster peer: "
                         f"{peer / med['snapsync smb' + tag]:.2f}x throughput (target >= 0.9)")
        if "rclone copy + check" in med and "snapsync smb" + tag in med:
            lines.append(f"snapsync smb{tag} / verifying peer (rclone copy + check --download): "
                         f"{med['rclone copy + check'] / med['snapsync smb' + tag]:.2f}x "
                         "throughput")
        if peer and "snapsync smb, no verify" + tag in med:
            lines.append(f"snapsync smb without read-back{tag} / faster peer: "
                         f"{peer / med['snapsync smb, no verify' + tag]:.2f}x throughput")
        if all(k + tag in med for k in ("snapsync smb", "snapsync local", "snapsync smb+local")):
            slower = max(med["snapsync smb" + tag], med["snapsync local" + tag])
            lines.append(f"smb+local{tag} / slower single: "
                         f"{med['snapsync smb+local' + tag] / slower:.2f}x time (target <= 1.15)")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
