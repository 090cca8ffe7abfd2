# SPDX-License-Identifier: MIT
"""A private Samba server for integration tests: Debian's smbd on 127.0.0.1 on a port the OS
picked, with its own smb.conf, state, passdb and log under a temporary folder, a user with a
password, and five shares:

  photos    read-write for USER
  guest     read-write for anyone (guest ok, guest only)
  readonly  read-only for USER
  encrypted read-write for USER, SMB3 encryption required
  mac       read-write for USER, with vfs catia + fruit storing names natively (Unraid's
            "enhanced macOS interoperability"; needs Debian's samba-vfs-modules)

Needs root (to add the Unix user and run smbd). Started as `smbd -F --debug-stdout -s CONF`, which
calls setsid() (so the process group it signals on exit is its own, never the harness's); stopped
by PID, then its process group. Standard library only; every wait has a deadline.

Smbd(dir, link="1gbit") puts smbd in a network namespace of its own behind a veth pair whose two
ends are rate-limited (tc tbf) in each direction, like a NAS on a full-duplex LAN; its address is
then `host` instead of 127.0.0.1. The benchmark uses it (bench/smb.py, BENCH_LINK); tbf's FIFO
holds up to BENCH_LINK_LATENCY of data (default 20ms) before it drops. BENCH_LINK_QUEUE=flows
gives each TCP flow a queue of its own, served in turn (as fq_codel, a Linux host's default
queue, does), instead of the one FIFO.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

from harness import remove_shared_dir, shared_dir

USER = "snapsync-smbtest"
SHARES = ("photos", "guest", "readonly", "encrypted", "mac")
PASSWORD = "Corr3ct-h0rse"  # a throwaway test account on 127.0.0.1 only

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_root():
    if os.geteuid() != 0:
        raise AssertionError("the SMB tests need root (to add a Unix user and run smbd); "
                             "CI runs them as root")


def ensure_unix_user(name):
    """A dedicated system user without a home or a login shell, created once."""
    if subprocess.run(["id", "-u", name], capture_output=True).returncode == 0:
        return
    r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], capture_output=True, text=True)
    if r.returncode != 0 and subprocess.run(["id", "-u", name],
                                            capture_output=True).returncode != 0:
        raise AssertionError(f"useradd {name} failed: {r.stderr}")


class Smbd:
    def __init__(self, base_dir, link=None):
        require_root()
        for tool in ("smbd", "smbpasswd"):
            if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
                raise AssertionError(f"{tool} is not installed (scripts/deps.sh --test installs "
                                     "samba)")
        # smbd works as USER inside the shares: a folder USER can reach wherever base_dir is
        self.base_dir = base_dir
        self.dir = shared_dir(base_dir, "smbd.")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.netns = None
        if link:
            self._make_link(link)
        self.conf = os.path.join(self.dir, "smb.conf")
        self.log = os.path.join(self.dir, "smbd.log")
        self.proc = None
        self.logf = None
        for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc", "shares"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        os.chmod(os.path.join(self.dir, "private"), 0o700)
        ensure_unix_user(USER)
        import pwd
        pw = pwd.getpwnam(USER)
        for share in SHARES:
            path = self.share_dir(share)
            os.makedirs(path, exist_ok=True)
            if share == "guest":
                os.chmod(path, 0o777)
            else:
                os.chown(path, pw.pw_uid, pw.pw_gid)
                os.chmod(path, 0o755)
        self._write_conf()
        r = subprocess.run([shutil.which("smbpasswd") or "/usr/sbin/smbpasswd", "-c", self.conf,
                            "-a", "-s", USER], input=f"{PASSWORD}\n{PASSWORD}\n",
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(f"smbpasswd failed: {r.stdout}{r.stderr}")

    def makedirs(self, path):
        """mkdir -p inside a share's folder on disk, owned by USER as if smbd had made them."""
        import pwd
        pw = pwd.getpwnam(USER)
        missing = []
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for p in reversed(missing):
            os.mkdir(p, 0o755)
            os.chown(p, pw.pw_uid, pw.pw_gid)

    @staticmethod
    def has_vfs_module(name):
        """Is Samba's VFS module `name` installed (samba-vfs-modules)?"""
        out = subprocess.run([shutil.which("smbd") or "/usr/sbin/smbd", "-b"], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            if line.strip().startswith("MODULESDIR:"):
                d = line.split(":", 1)[1].strip()
                return os.path.exists(os.path.join(d, "vfs", f"{name}.so"))
        return False

    def share_dir(self, share):
        return os.path.join(self.dir, "shares", share)

    def _write_conf(self):
        d = self.dir
        with open(self.conf, "w") as f:
            f.write(f"""[global]
  server role = standalone server
  workgroup = WORKGROUP
  netbios name = SNAPTEST
  smb ports = {self.port}
  interfaces = {self.host}
  bind interfaces only = yes
  disable netbios = yes
  private dir = {d}/private
  lock directory = {d}/lock
  state directory = {d}/state
  cache directory = {d}/cache
  pid directory = {d}/pid
  ncalrpc dir = {d}/ncalrpc
  passdb backend = tdbsam:{d}/private/passdb.tdb
  log file = {d}/log.%m
  log level = 1
  logging = file
  map to guest = Bad User
  guest account = nobody
  server min protocol = SMB2_02
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  obey pam restrictions = no
  unix password sync = no
  usershare path =

[photos]
  path = {self.share_dir("photos")}
  read only = no
  valid users = {USER}

[guest]
  path = {self.share_dir("guest")}
  read only = no
  guest ok = yes
  guest only = yes

[readonly]
  path = {self.share_dir("readonly")}
  read only = yes
  valid users = {USER}

[encrypted]
  path = {self.share_dir("encrypted")}
  read only = no
  valid users = {USER}
  smb encrypt = required

[mac]
  path = {self.share_dir("mac")}
  read only = no
  valid users = {USER}
  vfs objects = catia fruit streams_xattr
  fruit:encoding = native
""")

    def _make_link(self, rate):
        """A namespace for smbd, joined to ours by a veth pair limited to rate each way."""
        n = os.getpid() % 16384  # one /30 of 10.213.0.0/16 per process
        self.netns = f"snapsync-smbd-{n}"
        outer, inner = f"ssb{n}a", f"ssb{n}b"
        base, last = f"10.213.{n // 64}.", n % 64 * 4
        self.host = f"{base}{last + 2}"
        self._outer = outer
        ns = ["ip", "netns", "exec", self.netns]
        steps = [["ip", "netns", "add", self.netns],
                 ["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
                 ["ip", "link", "set", inner, "netns", self.netns],
                 ["ip", "addr", "add", f"{base}{last + 1}/30", "dev", outer],
                 ["ip", "link", "set", outer, "up"],
                 ns + ["ip", "addr", "add", f"{self.host}/30", "dev", inner],
                 ns + ["ip", "link", "set", inner, "up"],
                 ns + ["ip", "link", "set", "lo", "up"]]
        latency = os.environ.get("BENCH_LINK_LATENCY", "20ms")
        queue = os.environ.get("BENCH_LINK_QUEUE", "fifo")
        if queue not in ("fifo", "flows"):
            raise AssertionError(f"BENCH_LINK_QUEUE={queue}: expected fifo or flows")
        # outer sends to smbd (the client's port is the source), inner back (the destination)
        for dev, prefix, port_at in ((outer, [], "0x000f0000"), (inner, ns, "0x0000000f")):
            tc = prefix + ["tc"]
            steps.append(tc + ["qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate",
                               rate, "burst", "256kb", "latency", latency])
            if queue == "flows":
                steps += self._flow_queue(tc, dev, rate, latency, port_at)
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                self._remove_link()
                raise AssertionError(f"{' '.join(cmd)} failed: {r.stderr}")

    @staticmethod
    def _flow_queue(tc, dev, rate, latency, client_port_at):
        """Under tbf, one queue per TCP flow (16 buckets by the client's port), served in turn
        (htb's deficit round robin among classes of equal priority), each holding up to `latency`
        of data at `rate`. That is the flow fairness of fq_codel, a Linux host's default queue
        under systemd, which this kernel lacks (as it lacks fq, sfq, drr and the flow
        classifier); it has htb and u32. client_port_at: the u32 mask (at offset 20, the TCP ports)
        that picks the low bits of the client's port in this direction."""
        units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
        bits = next(float(rate[:-len(u)]) * m for u, m in units.items() if rate.endswith(u))
        if not latency.endswith("ms"):
            raise AssertionError(f"BENCH_LINK_LATENCY={latency}: expected milliseconds (20ms)")
        limit = str(int(bits / 8 * float(latency[:-2]) / 1000))
        dv = ["dev", dev]
        steps = [tc + ["qdisc", "add"] + dv + ["parent", "1:1", "handle", "10:", "htb", "default",
                                              "100"]]
        for b in range(16):
            cls = f"10:{0x100 + b:x}"
            steps += [tc + ["class", "add"] + dv + ["parent", "10:", "classid", cls, "htb", "rate",
                                                   "10gbit", "quantum", "3028"],
                      tc + ["qdisc", "add"] + dv + ["parent", cls, "bfifo", "limit", limit]]
        steps += [tc + ["filter", "add"] + dv + ["parent", "10:", "prio", "1", "handle", "2:",
                                                "protocol", "ip", "u32", "divisor", "16"],
                  tc + ["filter", "add"] + dv + ["parent", "10:", "prio", "1", "protocol", "ip",
                                                "u32", "ht", "800::", "match", "ip", "protocol",
                                                "6", "0xff", "hashkey", "mask", client_port_at,
                                                "at", "20", "link", "2:"]]
        for b in range(16):
            steps.append(tc + ["filter", "add"] + dv + ["parent", "10:", "prio", "1", "protocol",
                                                       "ip", "u32", "ht", f"2:{b:x}:", "match",
                                                       "u8", "0", "0", "flowid",
                                                       f"10:{0x100 + b:x}"])
        return steps

    def _remove_link(self):
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            subprocess.run(["ip", "link", "del", self._outer], capture_output=True)
            self.netns = None

    def _port_open(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex((self.host, self.port)) == 0

    def start(self, timeout=30.0):
        smbd = shutil.which("smbd") or "/usr/sbin/smbd"
        self.logf = open(self.log, "ab")
        # Without --no-process-group smbd calls setsid() itself: it leads a session of its own
        # and the signals it sends its process group on exit never reach the harness.
        ns = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(ns + [smbd, "-F", "--debug-stdout", "-s", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"smbd exited with {self.proc.returncode}:\n{self.log_text()}")
            if self._port_open():
                return
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"smbd did not listen on port {self.port}:\n{self.log_text()}")

    def _signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def pause(self):
        """SIGSTOP smbd and every process it forked: the server hangs, its connections stay open."""
        self._signal_group(signal.SIGSTOP)

    def resume(self):
        self._signal_group(signal.SIGCONT)

    def kill(self):
        """SIGKILL smbd and every process it forked (one per client): the server dies."""
        if not self.proc:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)
        # the children are gone too once nothing answers on the port any more
        deadline = time.monotonic() + 30
        while self._port_open() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.proc = None
        self.logf.close()

    def stop(self):
        if not self.proc:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)  # children serving clients, and anything left
        if self.proc.poll() is None:
            self.proc.wait(timeout=20)
        self.proc = None
        self.logf.close()

    def restart(self):
        self.stop()
        self.start()

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def files(self, share):
        """Relative paths of every file in a share's folder on disk."""
        root = self.share_dir(share)
        out = []
        for r, dirs, files in os.walk(root):
            for f in files:
                out.append(os.path.relpath(os.path.join(r, f), root))
        return sorted(out)

    def cleanup(self):
        self.stop()
        self._remove_link()
        remove_shared_dir(self.base_dir, self.dir)
