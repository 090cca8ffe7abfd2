# SPDX-License-Identifier: MIT
"""Dead-destination benchmark, started by bench/deadsmb.sh (as root: the real smbd comes from
tests/integration/smbd.py). Backs up the same card to a local folder:

- alone (the reference);
- next to an SMB share whose server accepts TCP connections and never answers;
- next to an SMB share whose port is closed;
- next to a real smbd stopped with SIGSTOP (it and every child) once the first copy to it is
  under way, and resumed after the run.

For each run it records when the last local copy got its final name (the folder is watched every
10 ms: this is a measurement, not a test) and when the process ended. The target: the local copies
finish within 1.2 x the local destination alone plus one connect timeout (unraid.timeout).
backup.destination_wait is 0, so the end of the session does not wait for the share to return.
Writes bench/out/deadsmb/results.md."""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import smbd  # noqa: E402
from cards import drop_caches, make_card  # noqa: E402

BIN = os.environ.get("SNAPSYNC_BIN", os.path.join(root, "build-bench", "snapsync"))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TIMEOUT = int(os.environ.get("BENCH_SMB_TIMEOUT", "30"))
LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "info")  # each run's log: work/<run>/log
ONLY = [n.strip() for n in os.environ.get("BENCH_ONLY", "").split(";") if n.strip()]
OUT = os.path.join(here, "out", "deadsmb")  # bench/out/ is gitignored


class BlackHole:
    """Accepts every connection on 127.0.0.1 and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_done(local, n):
    """How many copies have their final name in the local folder."""
    count = 0
    for dp, dirs, files in os.walk(local):
        if ".snapsync-tmp" in dp:
            continue
        count += sum(1 for f in files if f.endswith(".CR3"))
    return count >= n


def run(name, card, n, work, smb_port, env, on_start=None):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    local = os.path.join(work, "local")
    cfg = os.path.join(work, "config.yaml")
    with open(cfg, "w") as f:
        f.write(f"service:\n  database_path: {work}/db\n  log_level: {LOG_LEVEL}\n"
                f"unraid:\n  enabled: {'true' if smb_port else 'false'}\n"
                f"  protocol: smb\n  host: 127.0.0.1:{smb_port or 445}\n"
                f"  share: photos\n  path: dead/{os.path.basename(work)}\n"
                f"  timeout: {TIMEOUT}\n"
                f"local:\n  enabled: true\n  path: {local}\n"
                "backup:\n  concurrent_files: 2\n  destination_wait: 0\n")
    os.chmod(cfg, 0o600)
    drop_caches()
    log = open(os.path.join(work, "log"), "w")
    t0 = time.monotonic()
    p = subprocess.Popen([BIN, "--config", cfg, "backup", card], stdout=subprocess.DEVNULL,
                         stderr=log, env=env)
    fired = on_start is None
    t_local = None
    while p.poll() is None or t_local is None:
        if not fired and on_start():
            fired = True
        if t_local is None and local_done(local, n):
            t_local = time.monotonic() - t0
        if p.poll() is not None and t_local is None:
            t_local = float("nan")  # the process ended without every local copy
            break
        time.sleep(0.01)
    t_end = time.monotonic() - t0
    log.close()
    return t_local, t_end, p.returncode


def main():
    os.makedirs(OUT, exist_ok=True)
    card = os.path.join(OUT, f"card-{SCALE:g}")
    make_card(card, int(24 * SCALE), int(72 * SCALE))  # About SCALE GiB
    n = sum(len(fs) for _, _, fs in os.walk(card))
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(card) for f in fs)
    server = smbd.Smbd(OUT)
    server.start()
    hole = BlackHole()
    env = dict(os.environ, UNRAID_USERNAME=smbd.USER, UNRAID_PASSWORD=smbd.PASSWORD)
    names = ["local alone", "+ SMB that never answers", "+ SMB port closed",
             "+ smbd stopped mid-session"]
    names = [n for n in names if not ONLY or n in ONLY or n == "local alone"]
    results = {k: [] for k in names}
    try:
        for rnd in range(ROUNDS):
            for name in names:
                work = os.path.join(OUT, "work", name.replace(" ", "_").replace("+", "p"))
                port, hook = None, None
                if name == "+ SMB that never answers":
                    port = hole.port
                elif name == "+ SMB port closed":
                    port = closed_port()
                elif name == "+ smbd stopped mid-session":
                    port = server.port
                    share = os.path.join(server.share_dir("photos"), "dead", os.path.basename(work),
                                         ".snapsync-tmp")

                    def hook(share=share):
                        try:
                            busy = any(os.path.getsize(os.path.join(share, t)) > (1 << 20)
                                       for t in os.listdir(share))
                        except OSError:
                            return False
                        if busy:
                            server.pause()
                        return busy
                try:
                    t_local, t_end, rc = run(name, card, n, work, port, env, hook)
                finally:
                    if name == "+ smbd stopped mid-session":
                        server.resume()
                        shutil.rmtree(os.path.join(server.share_dir("photos"), "dead"),
                                      ignore_errors=True)
                results[name].append((t_local, t_end, rc))
                print(f"round {rnd + 1} {name}: local copies {t_local:.2f} s, "
                      f"process {t_end:.2f} s, exit {rc}", flush=True)
    finally:
        hole.close()
        server.stop()

    ref = statistics.median(r[0] for r in results["local alone"])
    target = 1.2 * ref + TIMEOUT
    lines = [f"# Dead SMB destination next to a local one ({n} files, {size / 1e6:.0f} MB, "
             f"{ROUNDS} rounds, unraid.timeout {TIMEOUT} s)", "",
             f"Target: local copies within 1.2 x {ref:.2f} s + {TIMEOUT} s = {target:.2f} s", "",
             "| run | local copies done (median) | process ended (median) | exit | target |",
             "|---|---|---|---|---|"]
    for name in names:
        tl = statistics.median(r[0] for r in results[name])
        te = statistics.median(r[1] for r in results[name])
        rcs = sorted({r[2] for r in results[name]})
        verdict = "" if name == "local alone" else ("PASS" if tl <= target else "MISS")
        lines.append(f"| {name} | {tl:.2f} s | {te:.2f} s | {rcs} | {verdict} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
