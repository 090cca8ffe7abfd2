# SPDX-License-Identifier: MIT
"""What a copy in a folder destination carries besides its bytes: the card file's modification
time (to the nanosecond where the filesystem keeps it), the configured file and folder modes
whatever the process umask (0077 here, 0027 as the systemd unit sets it), and the configured
owner and group. The real binary on real files; needs root (chown), as CI runs."""

import os
import shutil
import stat
import subprocess

from harness import BIN, SANITIZER_MARKS, SnapsyncTest, make_blob, make_photo, \
    reachable_by_all, write_config

NOBODY = 65534   # Debian's nobody
NOGROUP = 65534  # Debian's nogroup
# a time with nanoseconds that no copy made "now" could have by chance
CARD_MTIME_NS = 1600000000 * 10**9 + 123456789


class CopyAttrsTest(SnapsyncTest):
    shared = True  # backup_as_nobody() works in the test's folder as nobody

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.fail("needs root: chown to nobody (CI runs as root)")
        self.second = os.path.join(self.dir, "second")

    def make_card(self):
        c = self.card
        make_photo(f"{c}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_blob(f"{c}/DCIM/100CANON/CLIP_0002.MP4", 3 << 20)
        for i, name in enumerate(("IMG_0001.JPG", "CLIP_0002.MP4")):
            t = CARD_MTIME_NS + i * 7
            os.utime(f"{c}/DCIM/100CANON/{name}", ns=(t, t))

    def backup_with_umask(self, mask, check=0):
        old = os.umask(mask)  # inherited by the child; this process runs one test at a time
        try:
            return self.backup(None, check)
        finally:
            os.umask(old)

    def copies(self, root):
        """{name: stat} of the copies under root, and [stat] of the folders below root."""
        files, dirs = {}, []
        for r, ds, fs in os.walk(root):
            ds[:] = [d for d in ds if d != ".snapsync-tmp"]
            for d in ds:
                dirs.append((os.path.relpath(os.path.join(r, d), root),
                             os.stat(os.path.join(r, d))))
            for f in fs:
                files[f] = os.stat(os.path.join(r, f))
        return files, dirs

    def assert_copies(self, root, file_mode, dir_mode, uid, gid):
        files, dirs = self.copies(root)
        # the ASC MHL history (a generation and the chain) gets the same modes and owner
        history = sorted(f for f in files if f.endswith(".mhl") or f == "ascmhl_chain.xml")
        self.assertEqual(len(history), 2, history)
        for name in history:
            st = files.pop(name)
            self.assertEqual(stat.S_IMODE(st.st_mode), file_mode, f"{name}: {oct(st.st_mode)}")
            self.assertEqual((st.st_uid, st.st_gid), (uid, gid), name)
        self.assertEqual(sorted(files), ["CLIP_0002.MP4", "IMG_0001.JPG"])
        for i, name in enumerate(("IMG_0001.JPG", "CLIP_0002.MP4")):
            st = files[name]
            self.assertEqual(st.st_mtime_ns, CARD_MTIME_NS + i * 7, name)
            self.assertEqual(stat.S_IMODE(st.st_mode), file_mode, f"{name}: {oct(st.st_mode)}")
            self.assertEqual((st.st_uid, st.st_gid), (uid, gid), name)
        self.assertGreaterEqual(len(dirs), 3)  # YYYY, MM, DD at least
        for rel, st in dirs:
            self.assertEqual(stat.S_IMODE(st.st_mode), dir_mode, f"{rel}: {oct(st.st_mode)}")
            self.assertEqual((st.st_uid, st.st_gid), (uid, gid), rel)

    def test_defaults_under_umask_0077(self):
        self.make_card()
        r = self.backup_with_umask(0o077)
        self.assertEqual(r["status"], "completed")
        self.assertEqual(r["files_copied"], 2)
        self.assert_copies(self.dest, 0o644, 0o755, 0, 0)
        # the destination folder itself was created by SnapSync too
        self.assertEqual(stat.S_IMODE(os.stat(self.dest).st_mode), 0o755)

    def test_configured_modes_and_owner_under_the_units_umask(self):
        self.make_card()
        with open(self.config, "w") as f:
            f.write(f"""service:
  database_path: {self.db}
unraid:
  enabled: true
  protocol: local
  mount_point: {self.dest}
  file_mode: "0640"
  dir_mode: "2770"
  owner: nobody
  group: nogroup
local:
  enabled: true
  path: {self.second}
  file_mode: 0604
  dir_mode: 0701
  owner: {NOBODY}
  group: 0
""")
        r = self.backup_with_umask(0o027)
        self.assertEqual(r["status"], "completed", r)
        self.assert_copies(self.dest, 0o640, 0o2770, NOBODY, NOGROUP)
        self.assert_copies(self.second, 0o604, 0o701, NOBODY, 0)
        self.assertEqual(stat.S_IMODE(os.stat(self.second).st_mode), 0o701)

    def backup_as_nobody(self):
        # nobody cannot run a binary in a build folder it cannot reach (a checkout in /root)
        bin_ = BIN
        if not reachable_by_all(shutil.which(BIN) or BIN):
            bin_ = os.path.join(self.dir, "snapsync")
            shutil.copy2(shutil.which(BIN) or BIN, bin_)
        p = subprocess.run([bin_, "--config", self.config, "backup", self.card],
                           capture_output=True, text=True, env=self.env, cwd=self.dir,
                           timeout=120, user=NOBODY, group=NOGROUP, extra_groups=[])
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, p.stderr)
        return p

    def test_chown_refused_is_a_copy_failure(self):
        """As a user that may not give files away, owner: root fails each copy with a message
        that says so, and leaves neither a copy nor a temporary."""
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2020:01:01 00:00:00")
        write_config(self.config, self.dest, self.db,
                     backup="  concurrent_files: 1\n  max_retries: 0\n")
        with open(self.config) as f:
            text = f.read().replace("  organize_by_date: true\n",
                                    "  organize_by_date: true\n  owner: root\n", 1)
        with open(self.config, "w") as f:
            f.write(text)
        os.makedirs(self.dest)  # else creating it is what fails first
        for path in (self.dir, self.config, self.dest):
            os.chown(path, NOBODY, NOGROUP)
        os.chmod(self.card, 0o755)
        p = self.backup_as_nobody()
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("cannot set owner 'root' on the copy", p.stdout + p.stderr)
        self.assertIn("Operation not permitted", p.stdout + p.stderr)
        self.assertEqual([f for f in self.dest_files() if not f.startswith(".")], [])
        self.assertEqual(self.temporaries(), [])

        # a folder it creates is refused the owner the same way, and is not left behind
        shutil.rmtree(self.dest)
        p = self.backup_as_nobody()
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn(f"cannot set owner 'root' on folder '{self.dest}': Operation not permitted",
                      p.stdout + p.stderr)
        self.assertFalse(os.path.exists(self.dest))
