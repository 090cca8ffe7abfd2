# SPDX-License-Identifier: MIT
"""Test harness for SnapSync integration tests: temporary folders, generated cards with real
photos and videos (ffmpeg + exiftool from Debian), config files, and running the real binary.

Standard library only. Every wait has a deadline; nothing sleeps to synchronise."""

import atexit
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import unittest

BIN = os.environ.get("SNAPSYNC_BIN", "snapsync")
TMP_ROOT = os.environ.get("SNAPSYNC_TEST_TMP", tempfile.gettempdir())
LSAN_SUPP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lsan.supp")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")

_sample_cache = {}
_sample_dir = None


def tool(name):
    path = shutil.which(name)
    if not path:
        raise AssertionError(f"{name} is not installed (scripts/deps.sh --test installs it)")
    return path


def reachable_by_all(path):
    """Can every user reach path: is each folder from / down to it searchable by others?"""
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def shared_dir(base_dir, prefix):
    """A fresh 0755 folder every user can reach, for fixtures that hand folders to other users
    (smbd's share user, nobody): under base_dir when every user can reach base_dir, else under
    /var/tmp (the checkout may be in /root, which is 0700) with a symlink of the same name in
    base_dir, so its logs are found next to the rest. remove_shared_dir() removes both."""
    os.makedirs(base_dir, exist_ok=True)
    if reachable_by_all(base_dir):
        path = tempfile.mkdtemp(prefix=prefix, dir=base_dir)
    else:
        path = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
        os.symlink(path, os.path.join(base_dir, os.path.basename(path)))
    os.chmod(path, 0o755)
    return path


def remove_shared_dir(base_dir, path):
    link = os.path.join(base_dir, os.path.basename(path))
    if os.path.islink(link) and os.readlink(link) == path:
        os.unlink(link)
    shutil.rmtree(path, ignore_errors=True)


def run_tool(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sample(kind, workdir):
    """A small real file of this kind ('jpg', 'mp4', 'mov', 'tif'), made once per process."""
    global _sample_dir
    if kind in _sample_cache:
        return _sample_cache[kind]
    if _sample_dir is None:
        os.makedirs(TMP_ROOT, exist_ok=True)
        _sample_dir = tempfile.mkdtemp(prefix="samples.", dir=TMP_ROOT)
        atexit.register(shutil.rmtree, _sample_dir, True)
    out = os.path.join(_sample_dir, f"sample.{kind}")
    ffmpeg = tool("ffmpeg")
    if kind in ("jpg", "tif"):
        run_tool(ffmpeg, "-y", "-f", "lavfi", "-i", "testsrc=size=160x120", "-frames:v", "1", out)
    else:
        run_tool(ffmpeg, "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "1",
                 "-pix_fmt", "yuv420p", "-metadata", "creation_time=2021-03-04T10:20:30Z", out)
    _sample_cache[kind] = out
    return out


def make_photo(path, workdir, date=None, salt=b""):
    """A real JPEG at path with EXIF DateTimeOriginal 'YYYY:MM:DD HH:MM:SS' (or none). salt makes
    the content unique (appended after the JPEG end, which readers ignore)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # exiftool works on a short name: it adds a suffix of its own that a 255-byte name lacks room for
    tmp = os.path.join(os.path.dirname(path), f".mk{os.getpid()}.jpg")
    shutil.copyfile(sample("jpg", workdir), tmp)
    if date:
        run_tool(tool("exiftool"), "-q", "-overwrite_original", f"-DateTimeOriginal={date}", tmp)
    with open(tmp, "ab") as f:
        f.write(salt or os.urandom(16))
    os.replace(tmp, path)


def make_tiff_raw(path, workdir, date=None):
    """A real TIFF at path (the container of most RAW formats: name it .NEF, .CR2, .DNG ...) with
    EXIF DateTimeOriginal 'YYYY:MM:DD HH:MM:SS' (or none), its content unique."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".mk{os.getpid()}.tif")
    shutil.copyfile(sample("tif", workdir), tmp)
    args = [f"-DateTimeOriginal={date}"] if date else []
    # a unique content: a description of random hex (appending after a TIFF is not ignored)
    run_tool(tool("exiftool"), "-q", "-overwrite_original", *args,
             f"-ImageDescription={os.urandom(8).hex()}", tmp)
    os.replace(tmp, path)


def make_video(path, workdir, salt=b""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(sample("mp4", workdir), path)
    with open(path, "ab") as f:
        f.write(salt or os.urandom(16))


def make_blob(path, size, seed=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n


def make_path_beyond_ceiling(root):
    """Under root, 20 folders of 250 bytes one inside the other and IMG_LOST.JPG at the bottom:
    a path of about 5 KB, more than a system call takes at once (and than SnapSync's 4096-byte
    ceiling), so each folder is made from the one above it. Returns the folder name."""
    name = "L" * 250
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        with open(os.open("IMG_LOST.JPG", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(os.urandom(4000))
    finally:
        os.close(fd)
    return name


def make_damaged_squashfs(workdir):
    """A squashfs card image whose first inode-table block is garbage: the folder DCIM/100BAD
    (its inode is in that block, written right after its three files) answers EIO to stat, as
    do part of the 300 files of DCIM/200GOOD; the root and DCIM stay readable. Returns the image
    path. The kernel reads metadata in compressed 8 KiB blocks, so the damage hits whole blocks."""
    import struct
    src = os.path.join(workdir, "squashfs-src")
    for i in range(3):
        make_blob(f"{src}/DCIM/100BAD/IMG_{i:04d}.JPG", 3000)
    for i in range(300):
        make_blob(f"{src}/DCIM/200GOOD/IMG_{i:04d}.JPG", 2000)
    img = os.path.join(workdir, "card.sqfs")
    subprocess.run([tool("mksquashfs"), src, img, "-noappend", "-quiet", "-comp", "gzip"],
                   check=True, stdout=subprocess.DEVNULL)
    with open(img, "r+b") as f:
        sb = f.read(96)
        inode_table, dir_table = struct.unpack_from("<QQ", sb, 64)
        f.seek(inode_table)
        first = struct.unpack("<H", f.read(2))[0] & 0x7fff
        # more than one block, else the root's inode would be damaged too and nothing mounts
        assert inode_table + 2 + first < dir_table, "the inode table fits in one block"
        f.seek(inode_table + 2 + 20)
        f.write(b"\xff" * 200)
    return img


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path, dest, db, extra="", backup=None, web_port=None):
    """A config for tests; the dashboard (when the service runs) on loopback and a free port."""
    backup = backup or "  concurrent_files: 2\n  max_retries: 1\n  retry_delay: 0.1\n"
    if "destination_wait" not in backup:  # a destination that is down: give up at once
        backup += "  destination_wait: 0\n"
    with open(path, "w") as f:
        f.write(f"""service:
  database_path: {db}
  log_level: info
  web_ui_bind: 127.0.0.1
  web_ui_port: {web_port or free_port()}
unraid:
  enabled: true
  protocol: local
  mount_point: {dest}
  organize_by_date: true
backup:
{backup}{extra}""")
    os.chmod(path, 0o600)


def file_digest(path, algorithm):
    import hashlib
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def md5(path):
    return file_digest(path, "md5")


def sha1(path):
    return file_digest(path, "sha1")


def xxh128(path):
    """XXH3-128 of a file in its canonical hex, as SnapSync records it (xxhsum -H2: Debian's
    xxhash, which the standard library lacks)."""
    out = subprocess.run([tool("xxhsum"), "-H2", path], check=True, capture_output=True,
                         text=True).stdout
    return out.split()[0]


def wait_for(predicate, timeout=30.0, what="condition"):
    """Waits for predicate() to become true, polling a file-system state with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# A test that spends most of its time waiting for a clock (a threshold of a minute): it runs in
# the normal build; the sanitizer passes of scripts/test.sh set SNAPSYNC_TEST_SKIP_SLOW=1, since
# a minute of waiting finds nothing more under a sanitizer than the tests of the same code that
# do not wait.
slow = unittest.skipIf(os.environ.get("SNAPSYNC_TEST_SKIP_SLOW") == "1",
                       "waits for a clock: runs in the normal build only")


class SnapsyncTest(unittest.TestCase):
    """Per test: a fresh folder with card/, dest/, snapsync.db and config.yaml."""

    # True where other users (nobody) work in the test's folder: it is then a shared_dir()
    shared = False

    def setUp(self):
        os.makedirs(TMP_ROOT, exist_ok=True)
        if self.shared:
            self.dir = shared_dir(TMP_ROOT, f"{self._testMethodName}.")
        else:
            self.dir = tempfile.mkdtemp(prefix=f"{self._testMethodName}.", dir=TMP_ROOT)
        self.card = os.path.join(self.dir, "card")
        self.dest = os.path.join(self.dir, "dest")
        self.db = os.path.join(self.dir, "snapsync.db")
        self.config = os.path.join(self.dir, "config.yaml")
        os.makedirs(self.card)
        write_config(self.config, self.dest, self.db)
        self.env = dict(os.environ)
        for k in ("SNAPSYNC_CONFIG", "IMMICH_API_KEY", "UNRAID_USERNAME", "UNRAID_PASSWORD",
                  "MQTT_USERNAME", "MQTT_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
            self.env.pop(k, None)
        # leaks inside system libraries (libsmbclient's init), listed and explained in the file
        lsan = self.env.get("LSAN_OPTIONS", "")
        self.env["LSAN_OPTIONS"] = (lsan + ":" if lsan else "") + f"suppressions={LSAN_SUPP}"

        self.cleanups = []
        self.started = time.monotonic()

    def tearDown(self):
        for fn in reversed(self.cleanups):
            fn()
        # where a test pass's time goes (CI must stay under 30 minutes: docs/testing.md)
        print(f"[{time.monotonic() - self.started:.1f} s] ", end="", file=sys.stderr, flush=True)
        result = getattr(self._outcome, "result", None)
        failed = result is not None and any(
            t is self for t, _ in list(result.errors) + list(result.failures))
        ok = getattr(self._outcome, "success", True) and not failed  # keep a failed test's folder
        if ok and not os.environ.get("SNAPSYNC_KEEP_TMP"):
            remove_shared_dir(TMP_ROOT, self.dir)

    def no_retries(self):
        """backup.max_retries 0 in the test's config (write_config's default is 1)."""
        with open(self.config) as f:
            text = f.read()
        self.assertIn("  max_retries: 1\n", text)
        with open(self.config, "w") as f:
            f.write(text.replace("  max_retries: 1\n", "  max_retries: 0\n", 1))

    def snapsync(self, *args, config=True, check=None, timeout=300):
        cmd = [BIN] + (["--config", self.config] if config else []) + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout,
                           cwd=self.dir)
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, p.stderr, f"sanitizer report from {cmd}:\n{p.stderr}")
        if check is not None:
            self.assertEqual(p.returncode, check,
                             f"{cmd} exited {p.returncode}\nstdout:{p.stdout}\nstderr:{p.stderr}")
        return p

    def run_bytes(self, *args, check=None):
        """snapsync with this test's config, its output as bytes (names that are not UTF-8)."""
        cmd = [BIN, "--config", self.config, *args]
        p = subprocess.run(cmd, capture_output=True, env=self.env, cwd=self.dir, timeout=300)
        stderr = p.stderr.decode("utf-8", "replace")
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, stderr, f"sanitizer report from {cmd}:\n{stderr}")
        if check is not None:
            self.assertEqual(p.returncode, check, stderr)
        return p

    def backup(self, path=None, check=0, *extra):
        p = self.snapsync("backup", path or self.card, "--json", *extra, check=check)
        return json.loads(p.stdout)

    def dest_files(self):
        """Relative paths of every file under dest/, temporaries included; not the ASC MHL
        history in ascmhl/ (test_history.py looks at it)."""
        out = []
        for root, dirs, files in os.walk(self.dest):
            if root == self.dest and "ascmhl" in dirs:
                dirs.remove("ascmhl")
            for f in files:
                out.append(os.path.relpath(os.path.join(root, f), self.dest))
        return sorted(out)

    def start_held_backup(self, card=None):
        """Starts `snapsync backup` of card (default self.card) in the background and stops it
        with SIGSTOP once its first copy has started. Returns the Popen."""
        cmd = [BIN, "--config", self.config, "backup", card or self.card]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=self.env, cwd=self.dir)
        wait_for(lambda: self.temporaries(), 60, "the first copy to start")
        p.send_signal(signal.SIGSTOP)  # hold the writer mid-session while we read
        return p

    def let_one_more_file_finish(self, p, session_id=None):
        """Lets the backup p held by start_held_backup run until the database records one more
        file of session_id (default: the newest session), then holds it again."""
        con = sqlite3.connect(self.db)
        try:
            sid = session_id or con.execute("select max(id) from sessions").fetchone()[0]
            count = lambda: con.execute(  # noqa: E731
                "select count(*) from session_files where session_id=?", (sid,)).fetchone()[0]
            before = count()
            p.send_signal(signal.SIGCONT)
            try:
                wait_for(lambda: count() > before, 120, "one more file done")
            finally:
                p.send_signal(signal.SIGSTOP)
        finally:
            con.close()

    def temporaries(self):
        """Temporaries of copies in dest/; the probe files of test-connection and of the
        dashboard's health check (created and removed at once) are not copies."""
        tmp = os.path.join(self.dest, ".snapsync-tmp")
        return [t for t in (os.listdir(tmp) if os.path.isdir(tmp) else []) if ".probe." not in t]


IMMICH_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "immich",
                             "server.py")


class ImmichServer:
    """tests/immich/server.py on 127.0.0.1, a port the OS picks; stopped by its pid."""

    def __init__(self, logdir, version="3.1.0", api_key="test-key", permissions="all"):
        import sys
        self.api_key = api_key
        self.log = open(os.path.join(logdir, f"immich-server.{version}.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, IMMICH_SERVER, "--port", "0", "--version", version,
             "--api-key", api_key, "--permissions", permissions],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = ""
        deadline = time.monotonic() + 30
        import select
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        if not line.startswith("PORT "):
            self.stop()
            raise AssertionError(f"the Immich test server did not start ({line!r})")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def control(self, what, body=None):
        import urllib.request
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/control/{what}", data=data,
                                     method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def state(self):
        return self.control("state")

    def faults(self, *rules):
        return self.control("faults", {"faults": list(rules)})

    def configure(self, **kw):
        return self.control("config", kw)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
