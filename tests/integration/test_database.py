# SPDX-License-Identifier: MIT
"""The database at its edges: a read-only filesystem, leftovers of a process that died."""

import json
import os
import shutil
import sqlite3
import subprocess

from harness import SnapsyncTest, make_photo, write_config


class DatabaseTest(SnapsyncTest):
    def mount_tmpfs(self, path, size="16m"):
        """A tmpfs at path for this test (root only: CI runs as root), unmounted at the end."""
        if os.geteuid() != 0:
            self.fail("this test mounts a tmpfs: run it as root (CI does)")
        os.makedirs(path)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                       check=True)
        self.cleanups.append(lambda: subprocess.run(["umount", "-l", path], check=False))

    def use_database(self, db):
        self.db = db
        write_config(self.config, self.dest, db)

    def test_status_on_a_read_only_filesystem(self):
        ro = os.path.join(self.dir, "ro")
        self.mount_tmpfs(ro)
        self.use_database(os.path.join(ro, "snapsync.db"))
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.assertEqual(self.backup()["status"], "completed")

        # a copy taken while a writer had the file open: the log holds the last session, and
        # its -shm is not part of the copy
        con = sqlite3.connect(self.db)
        con.execute("pragma wal_autocheckpoint = 0")
        con.execute("update sessions set error = 'only in the log'")
        con.commit()
        walled = os.path.join(ro, "walled.db")
        shutil.copyfile(self.db, walled)
        shutil.copyfile(self.db + "-wal", walled + "-wal")
        con.execute("update sessions set error = null")
        con.commit()
        con.close()
        self.assertFalse(os.path.exists(self.db + "-wal"))

        subprocess.run(["mount", "-o", "remount,ro", ro], check=True)

        # reading works: the last session, not "no backups yet"
        p = self.snapsync("status", check=0)
        self.assertIn("last session", p.stdout)
        self.assertNotIn("does not exist", p.stdout)
        sessions = json.loads(self.snapsync("sessions", "--json", check=0).stdout)
        self.assertEqual([s["status"] for s in sessions], ["completed"])
        self.assertFalse(os.path.exists(self.db + "-shm"))

        # what cannot be read is an error naming the file, never "does not exist" with exit 0
        self.use_database(walled)
        for cmd in (["status"], ["sessions"], ["status", "--json"]):
            p = self.snapsync(*cmd, check=1)
            self.assertIn(walled, p.stderr)
            self.assertIn("read-only", p.stderr)
            self.assertNotIn("does not exist", p.stdout + p.stderr)
        # and a backup cannot record anything there
        p = self.snapsync("backup", self.card, check=1)
        self.assertIn("Read-only file system", p.stderr)
