# SPDX-License-Identifier: MIT
"""The SMB destination against a real Samba server (smbd.py) on 127.0.0.1: backup to SMB and a
local folder at once, re-runs, the ASC MHL history in ascmhl/ of the share, bad credentials,
missing and read-only shares, guest access, the server killed mid-transfer, names Windows forbids
(and their original form on a share with vfs catia + fruit), parallel transfers through Samba's
thread hooks, and `snapsync test-connection`.

Needs root (smbd and a Unix user); fails without it, as CI runs as root. Assertions read the
shares' folders on disk directly (this kernel has no cifs)."""

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading

from harness import (BIN, SANITIZER_MARKS, TMP_ROOT, SnapsyncTest, make_blob, make_photo,
                     make_video, md5, wait_for)
import smbd
from broker import FlipRelay
from test_history import chain, check_history, generation_paths, generations, tree

SFM = {c: chr(0xF000 + c) for c in range(1, 0x20)}
SFM.update({ord(ch): chr(0xF020 + i) for i, ch in enumerate('"*:<>?\\|')})


def sfm_map(name):
    """What SnapSync stores on a share without catia (see src/dest_smb.c)."""
    out = "".join(SFM.get(ord(ch), ch) for ch in name)
    if out.endswith(" "):
        out = out[:-1] + "\uf028"
    elif out.endswith("."):
        out = out[:-1] + "\uf029"
    return out


def sfm_unmap(name):
    back = {v: chr(k) for k, v in SFM.items()}
    back["\uf028"] = " "
    back["\uf029"] = "."
    return "".join(back.get(ch, ch) for ch in name)


class BlackHole:
    """A TCP server on 127.0.0.1, a port the OS picks, that accepts every connection and never
    answers: a NAS that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class SmbTest(SnapsyncTest):
    server = None

    @classmethod
    def setUpClass(cls):
        os.makedirs(TMP_ROOT, exist_ok=True)
        cls.server = smbd.Smbd(TMP_ROOT)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            if os.environ.get("SNAPSYNC_KEEP_TMP"):
                cls.server.stop()
            else:
                cls.server.cleanup()

    def setUp(self):
        super().setUp()
        if not self.server.proc:  # a test that killed it failed before starting it again
            self.server.start()
        self.sub = self._testMethodName  # each test works in a folder of its own in the shares
        self.local = os.path.join(self.dir, "local")
        self.env["UNRAID_USERNAME"] = smbd.USER
        self.env["UNRAID_PASSWORD"] = smbd.PASSWORD
        self.smb_config()

    def smb_config(self, share="photos", port=None, local=False, backup=None, extra="",
                   log_level="info", timeout=None):
        backup = backup or "  concurrent_files: 2\n  max_retries: 1\n  retry_delay: 0.1\n"
        if "destination_wait" not in backup:  # a share that is down: give up at once
            backup += "  destination_wait: 0\n"
        local_section = (f"local:\n  enabled: true\n  path: {self.local}\n"
                         if local else "")
        with open(self.config, "w") as f:
            f.write(f"""service:
  database_path: {self.db}
  log_level: {log_level}
unraid:
  enabled: true
  protocol: smb
  host: 127.0.0.1:{port or self.server.port}
  share: {share}
  path: snap/{self.sub}
  organize_by_date: true
{f"  timeout: {timeout}{chr(10)}" if timeout else ""}{local_section}backup:
{backup}{extra}""")
        os.chmod(self.config, 0o600)

    def root(self, share="photos"):
        return os.path.join(self.server.share_dir(share), "snap", self.sub)

    def share_files(self, share="photos"):
        """Files under our folder of the share, temporaries included, the ASC MHL history left out
        (test_the_share_keeps_an_asc_mhl_history checks it)."""
        out = []
        for r, dirs, files in os.walk(self.root(share)):
            if r == self.root(share):
                dirs[:] = [d for d in dirs if d != "ascmhl"]
            for f in files:
                out.append(os.path.relpath(os.path.join(r, f), self.root(share)))
        return sorted(out)

    def share_temporaries(self, share="photos"):
        tmp = os.path.join(self.root(share), ".snapsync-tmp")
        return os.listdir(tmp) if os.path.isdir(tmp) else []

    def assert_no_secret(self, p):
        for text in (p.stdout, p.stderr):
            self.assertNotIn(smbd.PASSWORD, text)

    def make_card(self):
        c = self.card
        make_photo(f"{c}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{c}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        make_video(f"{c}/DCIM/100CANON/MVI_0003.MP4", self.dir)
        make_blob(f"{c}/DCIM/100CANON/CLIP_0004.MP4", 5 << 20)  # several chunks
        # same name and day, other folder and content: IMG_0001_1.JPG
        make_photo(f"{c}/DCIM/101CANON/IMG_0001.JPG", self.dir, "2023:07:14 11:00:00")

    def assert_clips_copied(self, n):
        """The share holds one copy of each of the card's DCIM/CLIP00.MP4 .. CLIP<n-1>.MP4, equal
        to it."""
        for i in range(n):
            name = f"CLIP{i:02d}.MP4"
            copies = [f for f in self.share_files() if f.endswith(name)]
            self.assertEqual(len(copies), 1, copies)
            self.assertEqual(md5(os.path.join(self.root(), copies[0])),
                             md5(f"{self.card}/DCIM/{name}"))

    def card_files(self):
        out = {}
        for r, dirs, files in os.walk(self.card):
            for f in files:
                out[os.path.relpath(os.path.join(r, f), self.card)] = md5(os.path.join(r, f))
        return out

    def test_smb_and_local_at_once_then_rerun_copies_nothing(self):
        self.make_card()
        self.smb_config(local=True)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_total"], 5)
        self.assertEqual(r["files_copied"], 5)
        self.assertEqual(self.share_temporaries(), [])
        want = sorted(self.card_files().values())
        on_share = [f for f in self.share_files() if not f.startswith(".")]
        self.dest = self.local
        on_local = [f for f in self.dest_files() if not f.startswith(".")]
        self.assertEqual(len(on_share), 5, on_share)
        self.assertEqual(on_share, on_local)  # same names and folders at both
        self.assertEqual(sorted(md5(os.path.join(self.root(), f)) for f in on_share), want)
        self.assertEqual(sorted(md5(os.path.join(self.local, f)) for f in on_local), want)
        self.assertIn("2023/07/14/IMG_0001.JPG", on_share)
        self.assertTrue(any(f.endswith("IMG_0001_1.JPG") for f in on_share), on_share)
        # the database knows both copies, the SMB one by its id
        import sqlite3
        con = sqlite3.connect(self.db)
        dests = {d for (d,) in con.execute("select distinct dest from copies")}
        self.assertIn(f"smb://127.0.0.1:{self.server.port}/photos/snap/{self.sub}", dests)
        self.assertEqual(len(dests), 2, dests)

        before = {f: os.stat(os.path.join(self.root(), f)).st_mtime_ns for f in on_share}
        r2 = self.backup()
        self.assertEqual(r2["files_copied"], 0)
        self.assertEqual(r2["files_skipped"], 5)
        self.assertEqual(r2["status"], "completed")
        after = {f: os.stat(os.path.join(self.root(), f)).st_mtime_ns for f in on_share}
        self.assertEqual(before, after)

    def test_copies_keep_the_card_files_modification_time(self):
        # set over SMB after the last write (libsmbclient's utimes: microseconds), read here on
        # the share's folder on disk
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_blob(f"{self.card}/DCIM/CLIP00.MP4", 3 << 20)
        want = {"IMG_0001.JPG": 1600000000 * 10**9 + 123456789,
                "CLIP00.MP4": 1500000000 * 10**9 + 987654000}
        for name, ns in want.items():
            os.utime(f"{self.card}/DCIM/{name}", ns=(ns, ns))
        r = self.backup()
        self.assertEqual(r["files_copied"], 2, r)
        got = {os.path.basename(f): os.stat(os.path.join(self.root(), f)).st_mtime_ns
               for f in self.share_files() if not f.startswith(".")}
        self.assertEqual(got, {name: ns // 1000 * 1000 for name, ns in want.items()})

    def test_transfers_run_in_parallel_with_samba_thread_hooks(self):
        # src/dest_smb.c installs Samba's thread hooks so that lanes' reads and writes need not
        # take turns; a Samba whose libsamba-util lacks them would quietly fall back to
        # serialised calls, which this catches
        for i in range(4):
            make_blob(f"{self.card}/DCIM/CLIP{i:02d}.MP4", (3 << 20) + i)
        self.smb_config(log_level="debug")
        p = self.snapsync("backup", self.card, "--json", check=0)
        self.assertEqual(json.loads(p.stdout)["files_copied"], 4)
        self.assertIn("libsmbclient thread hooks in place: transfers run in parallel", p.stderr)
        self.assertNotIn("serialised", p.stderr)
        self.assert_no_secret(p)
        self.assert_clips_copied(4)

    def test_parallel_lanes_are_race_free_under_drd(self):
        # calls that take a path (open, stat, rename) run alongside other lanes' reads and
        # writes (src/dest_smb.c, lib_lock_path); DRD checks every access of snapsync and
        # libsmbclient for two threads touching the same memory unordered
        if not shutil.which("valgrind"):
            self.skipTest("valgrind is not installed")
        with open(BIN, "rb") as f:
            if b"__asan_init" in f.read():
                self.skipTest("an AddressSanitizer build cannot run under valgrind")
        for i in range(12):
            make_blob(f"{self.card}/DCIM/CLIP{i:02d}.MP4", (1 + i % 3) * 700000 + i)
        self.smb_config(backup="  concurrent_files: 4\n")
        supp = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "drd.supp")
        cmd = ["valgrind", "--tool=drd", "--error-exitcode=99", f"--suppressions={supp}", BIN,
               "--config", self.config, "backup", self.card, "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=600,
                           cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr[-6000:])
        self.assertNotIn("Conflicting", p.stderr)
        self.assertEqual(json.loads(p.stdout)["files_copied"], 12)
        self.assert_clips_copied(12)

    def test_existing_file_is_never_overwritten(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2022:02:02 12:00:00")
        day = os.path.join(self.root(), "2022/02/02")
        self.server.makedirs(day)
        with open(f"{day}/IMG_0001.JPG", "wb") as f:
            f.write(b"someone else's photo")
        with open(f"{self.card}/DCIM/IMG_0002.JPG", "rb") as s, \
                open(f"{day}/IMG_0002.JPG", "wb") as d:
            d.write(s.read())  # already there with the same content
        r = self.backup()
        self.assertEqual(r["files_failed"], 0)
        self.assertEqual(r["files_copied"], 1)
        self.assertEqual(r["files_skipped"], 1)
        with open(f"{day}/IMG_0001.JPG", "rb") as f:
            self.assertEqual(f.read(), b"someone else's photo")
        self.assertEqual(md5(f"{day}/IMG_0001_1.JPG"), md5(f"{self.card}/DCIM/IMG_0001.JPG"))
        self.assertEqual(sorted(os.listdir(day)),
                         ["IMG_0001.JPG", "IMG_0001_1.JPG", "IMG_0002.JPG"])

    def test_sidecars_travel_with_their_photo_under_its_final_name(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2022:02:02 12:00:01")
        sidecars = {"IMG_0001.xmp": b"<x:xmpmeta>one</x:xmpmeta>", "IMG_0001.THM": b"thumb",
                    "IMG_0002.xmp": b"<x:xmpmeta>two</x:xmpmeta>"}
        for name, data in sidecars.items():
            with open(f"{self.card}/DCIM/{name}", "wb") as f:
                f.write(data)
        day = os.path.join(self.root(), "2022/02/02")
        self.server.makedirs(day)
        with open(f"{day}/IMG_0001.JPG", "wb") as f:
            f.write(b"someone else's photo")  # the copy becomes IMG_0001_1.JPG
        r = self.backup()
        self.assertEqual(r["files_failed"], 0)
        self.assertEqual(r["files_copied"], 2)
        self.assertEqual(sorted(os.listdir(day)),
                         ["IMG_0001.JPG", "IMG_0001_1.JPG", "IMG_0001_1.THM", "IMG_0001_1.xmp",
                          "IMG_0002.JPG", "IMG_0002.xmp"])
        for name, data in (("IMG_0001_1.xmp", sidecars["IMG_0001.xmp"]),
                           ("IMG_0001_1.THM", sidecars["IMG_0001.THM"]),
                           ("IMG_0002.xmp", sidecars["IMG_0002.xmp"])):
            with open(f"{day}/{name}", "rb") as f:
                self.assertEqual(f.read(), data, name)
        self.assertEqual(self.share_temporaries(), [])
        r2 = self.backup()
        self.assertEqual(r2["files_copied"], 0)
        self.assertEqual(len(os.listdir(day)), 6)

    def test_the_share_keeps_an_asc_mhl_history(self):
        # checked as test_history checks a folder: the schemas, the chain's C4 of each
        # generation's bytes, and the files listed are the share's, under the names they have
        # there (a name Windows forbids: its mapped form), sidecars included
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        make_photo(f"{self.card}/DCIM/a:b.JPG", self.dir, "2024:05:01 11:00:00")
        make_blob(f"{self.card}/DCIM/CLIP_0002.MP4", 3 << 20)
        for name in ("IMG_0001.xmp", "a:b.xmp"):
            with open(f"{self.card}/DCIM/{name}", "wb") as f:
                f.write(b"<x:xmpmeta>" + name.encode() + b"</x:xmpmeta>")
        r = self.backup()
        self.assertEqual(r["files_copied"], 3, r)
        root = self.root()
        self.assertEqual(len(generations(root)), 1)
        listed = check_history(self, root, self.sub)
        self.assertEqual(listed, tree(root))
        self.assertIn("2024/05/01/" + sfm_map("a:b.JPG"), listed)
        self.assertIn("2024/05/01/" + sfm_map("a:b.xmp"), listed)
        self.assertIn("2024/05/01/IMG_0001.xmp", listed)

        # nothing new: no generation; a new file: generation 2 lists it alone
        self.backup()
        self.assertEqual(len(generations(root)), 1)
        make_photo(f"{self.card}/DCIM/IMG_0003.JPG", self.dir, "2024:05:02 10:00:00")
        r = self.backup()
        self.assertEqual(r["files_copied"], 1, r)
        names = generations(root)
        self.assertEqual(len(names), 2)
        self.assertTrue(names[1].startswith("0002_"), names)
        self.assertEqual(generation_paths(root, names[1]), ["2024/05/02/IMG_0003.JPG"])
        self.assertEqual(check_history(self, root, self.sub), tree(root))
        self.assertEqual(self.share_temporaries(), [])

    def test_a_generation_number_taken_on_the_share_is_skipped(self):
        # another writer's generation 2, unknown to SnapSync's chain: found and never replaced
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        self.backup()
        history = os.path.join(self.root(), "ascmhl")
        first = generations(self.root())[0]
        shutil.copyfile(os.path.join(history, first),
                        os.path.join(history, f"0002_{self.sub}_2020-01-01_000000Z.mhl"))
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2024:05:02 10:00:00")
        self.backup()
        names = generations(self.root())
        self.assertEqual(len(names), 3)
        self.assertTrue(names[2].startswith("0003_"), names)
        self.assertEqual([g[0] for g in chain(self.root())], [1, 3])
        self.assertEqual(generation_paths(self.root(), names[2]), ["2024/05/02/IMG_0002.JPG"])
        with open(os.path.join(history, first), "rb") as f, \
                open(os.path.join(history, names[1]), "rb") as g:
            self.assertEqual(f.read(), g.read(), "the other writer's generation is kept")

    def test_wrong_password_is_a_clear_error(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        self.env["UNRAID_PASSWORD"] = "wrong-" + smbd.PASSWORD
        p = self.snapsync("backup", self.card, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertEqual(r["files_failed"], 1)
        self.assertIn("authentication failed", p.stderr)
        self.assertNotIn("wrong-", p.stdout + p.stderr)
        p = self.snapsync("test-connection", check=1)
        self.assertRegex(p.stdout, r"^FAIL  smb smb://127\.0\.0\.1:\d+/photos/snap/\S+: SMB "
                                   r"authentication failed for user 'snapsync-smbtest'")
        self.assertNotIn("wrong-", p.stdout + p.stderr)
        self.assertEqual(self.share_files(), [])

    def test_missing_share(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        self.smb_config(share="nosuchshare")
        p = self.snapsync("backup", self.card, "--json", check=1)
        self.assertIn("SMB share 'nosuchshare' does not exist on '127.0.0.1'", p.stderr)
        self.assert_no_secret(p)
        p = self.snapsync("test-connection", check=1)
        self.assertIn("does not exist", p.stdout)

    def test_read_only_share(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        self.smb_config(share="readonly")
        p = self.snapsync("backup", self.card, "--json", check=1)
        self.assertEqual(json.loads(p.stdout)["files_failed"], 1)
        self.assertIn("access denied for snapsync-smbtest", p.stderr)
        self.assert_no_secret(p)
        p = self.snapsync("test-connection", check=1)
        self.assertTrue(p.stdout.startswith("FAIL  smb "), p.stdout)
        self.assertIn("access denied", p.stdout)
        self.assertEqual(self.server.files("readonly"), [])

    def test_guest_share_without_credentials(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        del self.env["UNRAID_USERNAME"]
        del self.env["UNRAID_PASSWORD"]
        self.smb_config(share="guest")
        r = self.backup()
        self.assertEqual(r["files_copied"], 1)
        self.assertEqual(md5(os.path.join(self.root("guest"), "2022/02/02/IMG_0001.JPG")),
                         md5(f"{self.card}/DCIM/IMG_0001.JPG"))
        p = self.snapsync("test-connection", check=0)
        self.assertIn("writable as guest", p.stdout)
        # a share that wants a user refuses guests, and says so
        self.smb_config(share="photos")
        p = self.snapsync("test-connection", check=1)
        self.assertIn("access denied for guest", p.stdout)

    def test_test_connection(self):
        self.smb_config(local=True)
        p = self.snapsync("test-connection", check=0)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 2, p.stdout)
        self.assertRegex(lines[0], r"^OK    smb: smb://127\.0\.0\.1:\d+/photos/snap/\S+ writable "
                                   r"as snapsync-smbtest, [\d.]+ GiB free$")
        self.assertTrue(lines[1].startswith("OK    local: "), lines[1])
        self.assert_no_secret(p)
        # the probe file is gone again
        self.assertEqual(self.share_temporaries(), [])
        # nothing listens on this port: unreachable, and the local folder still passes
        self.smb_config(local=True, port=smbd.free_port())
        p = self.snapsync("test-connection", check=1)
        lines = p.stdout.splitlines()
        self.assertRegex(lines[0], r"^FAIL  smb smb://127\.0\.0\.1:\d+/photos/snap/\S+: SMB server "
                                   r"'127\.0\.0\.1' port \d+ is unreachable: Connection refused$")
        self.assertTrue(lines[1].startswith("OK    local: "), lines[1])

    def run_in_background(self):
        log = open(os.path.join(self.dir, "background.log"), "w")
        p = subprocess.Popen([BIN, "--config", self.config, "backup", self.card],
                             stdout=subprocess.DEVNULL, stderr=log, env=self.env, cwd=self.dir)
        self.cleanups.append(lambda: (p.poll() is None and p.kill(), p.wait(), log.close()))
        return p

    def background_log(self):
        with open(os.path.join(self.dir, "background.log")) as f:
            text = f.read()
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, text, text)
        return text

    def mid_transfer(self):
        tmp = os.path.join(self.root(), ".snapsync-tmp")
        try:
            return any(os.path.getsize(os.path.join(tmp, n)) > (1 << 20)
                       for n in os.listdir(tmp))
        except OSError:
            return False

    def test_smbd_killed_mid_transfer_then_next_run_completes(self):
        for i in range(8):
            make_blob(f"{self.card}/DCIM/CLIP{i:02d}.MP4", 24 << 20)
        p = self.run_in_background()
        wait_for(self.mid_transfer, 120, "a copy in the middle of a file")
        self.server.kill()
        self.assertEqual(p.wait(timeout=120), 1)  # the files in flight and after failed
        log = self.background_log()
        self.assertIn("SMB server", log)
        self.assertTrue(self.share_temporaries(), "the kill should leave a temporary behind")

        self.server.start()
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_failed"], 0)
        self.assertEqual(self.share_temporaries(), [])
        copies = [f for f in self.share_files() if not f.startswith(".")]
        self.assertEqual(len(copies), 8, copies)  # each file once, no _1
        for c in copies:
            self.assertEqual(md5(os.path.join(self.root(), c)),
                             md5(f"{self.card}/DCIM/{os.path.basename(c)}"))

    # ---- a share that goes away, hangs or never answers: the local copies go on ----

    def make_clips(self, n, size):
        for i in range(n):
            make_blob(f"{self.card}/DCIM/CLIP{i:02d}.MP4", size)

    def copy_states(self, kind):
        con = sqlite3.connect(self.db)
        try:
            return [r[0] for r in con.execute(
                "select state from copies where dest like ? order by file_id", (kind + ":%",))]
        finally:
            con.close()

    def assert_local_complete_and_share_waits(self, r, log, n):
        """Every local copy made and verified, the share's copies pending, the session partial,
        and the problem said once, not once per file."""
        self.assertEqual(r["status"], "partial", r)
        self.assertEqual(r["files_failed"], n, r)
        self.assertIn("is down", r["error"])
        self.assertIn("smb://127.0.0.1", r["error"])
        for i in range(n):
            name = f"CLIP{i:02d}.MP4"
            copies = [os.path.join(dp, f) for dp, _, fs in os.walk(self.local) for f in fs
                      if f == name]
            self.assertEqual(len(copies), 1, copies)
            self.assertEqual(md5(copies[0]), md5(f"{self.card}/DCIM/{name}"))
        self.assertEqual(self.copy_states("local"), ["completed"] * n)
        self.assertEqual(self.copy_states("smb"), ["pending"] * n)
        self.assertEqual(log.count("destination down"), 1, log)
        self.assertNotIn("will retry", log)

    def test_a_share_that_accepts_and_never_answers_does_not_hold_up_local_copies(self):
        hole = BlackHole()
        self.cleanups.append(hole.close)
        self.make_clips(4, 3 << 20)
        self.smb_config(port=hole.port, local=True, timeout=2)
        p = self.snapsync("backup", self.card, "--json", check=1)
        self.assert_local_complete_and_share_waits(json.loads(p.stdout), p.stderr, 4)

    def test_a_share_whose_port_is_closed_does_not_hold_up_local_copies(self):
        from harness import free_port
        self.make_clips(4, 3 << 20)
        self.smb_config(port=free_port(), local=True, timeout=2)
        p = self.snapsync("backup", self.card, "--json", check=1)
        self.assert_local_complete_and_share_waits(json.loads(p.stdout), p.stderr, 4)

    def test_a_share_that_hangs_mid_session_is_down_then_the_next_run_completes(self):
        self.make_clips(8, 16 << 20)
        self.smb_config(local=True, timeout=2)
        p = self.run_in_background()
        wait_for(self.mid_transfer, 120, "a copy in the middle of a file")
        self.server.pause()  # smbd and its children stop answering; connections stay open
        try:
            self.assertEqual(p.wait(timeout=300), 1, self.background_log())
        finally:
            self.server.resume()
        log = self.background_log()
        self.assertEqual(log.count("destination down"), 1, log)
        local = [f for dp, _, fs in os.walk(self.local) for f in fs if f.endswith(".MP4")]
        self.assertEqual(len(local), 8, local)
        self.assertEqual(self.copy_states("local"), ["completed"] * 8)
        self.assertIn("pending", self.copy_states("smb"))
        # the share answers again: the next run copies only what it lacks
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(self.share_temporaries(), [])
        self.assert_clips_copied(8)

    def test_a_share_back_within_destination_wait_gets_its_files_in_the_same_session(self):
        self.make_clips(6, 16 << 20)
        self.smb_config(local=True, timeout=2, backup="  concurrent_files: 2\n  max_retries: 1\n"
                        "  retry_delay: 0.1\n  destination_wait: 120\n")
        p = self.run_in_background()
        wait_for(self.mid_transfer, 120, "a copy in the middle of a file")
        self.server.pause()
        wait_for(lambda: "destination down" in self.background_log(), 120, "the share down")
        self.server.resume()
        self.assertEqual(p.wait(timeout=300), 0, self.background_log())
        log = self.background_log()
        self.assertIn("destination back", log)
        self.assertEqual(self.copy_states("smb"), ["completed"] * 6)
        self.assertEqual(self.share_temporaries(), [])
        self.assert_clips_copied(6)

    def test_server_restart_mid_run_reconnects(self):
        for i in range(6):
            make_blob(f"{self.card}/DCIM/CLIP{i:02d}.MP4", 16 << 20)
        self.smb_config(backup="  concurrent_files: 2\n  max_retries: 5\n  retry_delay: 0.5\n"
                               "  destination_wait: 120\n")
        p = self.run_in_background()
        wait_for(self.mid_transfer, 120, "a copy in the middle of a file")
        self.server.kill()
        self.server.start()
        self.assertEqual(p.wait(timeout=300), 0, self.background_log())
        # one line when the server went away, one when it answered again; not one per file
        log = self.background_log()
        self.assertEqual(log.count("destination down"), 1, log)
        self.assertIn("destination back", log)
        self.assertEqual(self.share_temporaries(), [])
        copies = [f for f in self.share_files() if not f.startswith(".")]
        self.assertEqual(len(copies), 6, copies)
        for c in copies:
            self.assertEqual(md5(os.path.join(self.root(), c)),
                             md5(f"{self.card}/DCIM/{os.path.basename(c)}"))

    def test_folder_pattern_names_are_mapped_and_md5_picked_at_the_end(self):
        """A folder from a pattern (docs/patterns.md) with characters Windows forbids (a camera
        model may hold them; here a default) is mapped like a file name; {md5} in the name is
        chosen when the copy is put in place."""
        photo = f"{self.card}/DCIM/IMG_0001.JPG"
        make_photo(photo, self.dir, "2020:05:06 07:08:09")
        self.smb_config(backup="  max_retries: 1\n  destination_wait: 0\n"
                        '  folder_pattern: "{year}/{model|EOS:R6?} x."\n'
                        '  file_pattern: "{name}_{md5:6}{ext}"\n')
        r = self.backup()
        self.assertEqual(r["files_copied"], 1, r)
        digest = md5(photo)
        want = f"2020/{sfm_map('EOS:R6? x.')}/IMG_0001_{digest[:6]}.JPG"
        self.assertEqual(self.share_files(), [want])
        self.assertEqual(md5(os.path.join(self.root(), want)), digest)
        con = sqlite3.connect(self.db)
        (remote,) = con.execute("select remote from copies").fetchone()
        con.close()
        self.assertTrue(remote.endswith(f"/IMG_0001_{digest[:6]}.JPG"), remote)

    def test_names_windows_forbids_are_mapped_reversibly(self):
        names = ["a:b.JPG", "what?.JPG", "star*.JPG", 'q"uote.JPG', "pi|pe.JPG", "lt<gt>.JPG",
                 "back\\slash.JPG", "new\nline.JPG", "percent%41.JPG", "hash#&amp;.JPG",
                 "ünïcödé_写真.JPG", "x" * 251 + ".JPG"]
        for n in names:
            make_photo(f"{self.card}/DCIM/{n}", self.dir, "2020:05:06 07:08:09")
        r = self.backup()
        self.assertEqual(r["files_copied"], len(names), r)
        day = os.path.join(self.root(), "2020/05/06")
        stored = sorted(os.listdir(day))
        self.assertEqual(stored, sorted(sfm_map(n) for n in names))
        for s in stored:
            self.assertEqual(md5(os.path.join(day, s)), md5(f"{self.card}/DCIM/{sfm_unmap(s)}"))

        # the same over an encrypted connection (the share requires it)
        self.smb_config(share="encrypted")
        r = self.backup()
        self.assertEqual(r["files_copied"], len(names), r)
        day = os.path.join(self.root("encrypted"), "2020/05/06")
        self.assertEqual(sorted(os.listdir(day)), stored)

    def test_names_keep_their_original_form_on_a_catia_fruit_share(self):
        # Unraid's "enhanced macOS interoperability" (vfs catia + fruit, fruit:encoding = native)
        # turns the private-use characters back into the characters Windows forbids: the file on
        # the server's disk has the name it had on the card.
        for mod in ("catia", "fruit"):
            self.assertTrue(smbd.Smbd.has_vfs_module(mod),
                            f"Samba VFS module {mod} is missing (scripts/deps.sh --test installs "
                            "samba-vfs-modules)")
        names = ["a:b.JPG", "what?.JPG", "star*.JPG", 'q"uote.JPG', "pi|pe.JPG", "lt<gt>.JPG",
                 "back\\slash.JPG", "tab\tin.JPG", "ünïcödé_写真.JPG", "plain.JPG"]
        for n in names:
            make_photo(f"{self.card}/DCIM/{n}", self.dir, "2020:05:06 07:08:09")
        self.smb_config(share="mac")
        r = self.backup()
        self.assertEqual((r["files_copied"], r["files_failed"]), (len(names), 0), r)
        day = os.path.join(self.root("mac"), "2020/05/06")
        self.assertEqual(sorted(os.listdir(day)), sorted(names))
        for n in names:
            self.assertEqual(md5(os.path.join(day, n)), md5(f"{self.card}/DCIM/{n}"))
        # without the database, a run looks at the share: it finds each file under its mapped
        # name with the same content, so nothing is copied twice and no NAME_1 appears
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        r = self.backup()
        self.assertEqual((r["files_copied"], r["files_skipped"]), (0, len(names)), r)
        self.assertEqual(sorted(os.listdir(day)), sorted(names))
        self.assertEqual(self.share_temporaries("mac"), [])

    def test_a_byte_changed_on_the_way_to_the_share_is_caught_by_the_read_back(self):
        # the card file: random bytes around 256 KiB of a repeated 16-byte pattern, whose first
        # occurrence the relay changes on its way to smbd
        pattern = b"SNAPSYNC-FLIP-ME"
        path = f"{self.card}/DCIM/100CANON/MVI_0001.MP4"
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(os.urandom(300 << 10) + pattern * (16 << 10) + os.urandom(300 << 10))
        # SMB2 without signing or encryption carries no checksum of the data: smbd stores it
        relay = FlipRelay(self.server, pattern)
        self.cleanups.append(relay.stop)
        self.smb_config(port=relay.port, backup="  concurrent_files: 1\n  max_retries: 0\n")
        p = self.snapsync("backup", self.card, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertEqual(relay.flipped, [pattern])
        self.assertEqual((r["files_copied"], r["files_failed"]), (0, 1), p.stderr)
        self.assertRegex(p.stderr, r"verification failed: the copy on smb://127\.0\.0\.1:\d+/"
                                   r"photos/\S+ differs from the card \(XXH3-128 [0-9a-f]{32}, ")
        self.assertEqual([f for f in self.share_files() if not f.startswith(".")], [])
        self.assertEqual(self.share_temporaries(), [])
        # the relay changes nothing more: the next run copies it, equal to the card
        r = self.backup()
        self.assertEqual(r["files_copied"], 1, r)
        copies = [f for f in self.share_files() if not f.startswith(".")]
        self.assertEqual(len(copies), 1, copies)
        self.assertEqual(md5(os.path.join(self.root(), copies[0])), md5(path))

    def test_share_full_is_a_clear_error(self):
        # the share's folder is a 6 MiB tmpfs: some files fit, the rest fail as "full"
        folder = self.root()
        self.server.makedirs(folder)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", folder],
                       check=True)
        self.cleanups.append(lambda: subprocess.run(["umount", "-l", folder]))
        import pwd
        pw = pwd.getpwnam(smbd.USER)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        for i, size in enumerate([1 << 20, 3 << 20, 4 << 20, 512 << 10]):
            make_blob(f"{self.card}/DCIM/F{i}.MP4", size)
        self.smb_config(backup="  concurrent_files: 1\n  max_retries: 0\n")
        p = self.snapsync("backup", self.card, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertGreaterEqual(r["files_failed"], 1)
        self.assertGreaterEqual(r["files_copied"], 1)
        self.assertEqual(r["status"], "partial")
        self.assertRegex(p.stderr, r"SMB share smb://127\.0\.0\.1:\d+/photos/\S+ is full")
        self.assertEqual(self.share_temporaries(), [], p.stderr)
        for c in [f for f in self.share_files() if not f.startswith(".")]:
            self.assertEqual(md5(os.path.join(folder, c)),
                             md5(f"{self.card}/DCIM/{os.path.basename(c)}"))

    def test_name_too_long_once_mapped_is_reported(self):
        long_name = "x" * 250 + ":.JPG"  # 255 bytes on the card, 257 once ':' is mapped
        make_photo(f"{self.card}/DCIM/{long_name}", self.dir, "2020:05:06 07:08:09")
        make_photo(f"{self.card}/DCIM/OK.JPG", self.dir, "2020:05:06 07:08:09")
        p = self.snapsync("backup", self.card, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertEqual((r["files_copied"], r["files_failed"]), (1, 1))
        self.assertIn("name too long for an SMB share", p.stderr)
        self.assertEqual([f for f in self.share_files() if not f.startswith(".")],
                         ["2020/05/06/OK.JPG"])
