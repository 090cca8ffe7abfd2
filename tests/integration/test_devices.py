# SPDX-License-Identifier: MIT
"""Backups that need real kernel objects: a full destination (a small tmpfs) and a card image on
a loop device (ext4, identified by its filesystem UUID). CI runs as root; a run without root
fails here rather than skipping silently."""

import json
import os
import subprocess

from harness import (SnapsyncTest, make_blob, make_damaged_squashfs, make_photo, md5, tool,
                     write_config)


def require_root(test):
    if os.geteuid() != 0:
        test.fail("this test needs root (mount); CI runs as root")


class DeviceTest(SnapsyncTest):
    def mount(self, *args):
        subprocess.run(["mount", *args], check=True)
        self.cleanups.append(lambda: subprocess.run(["umount", "-l", args[-1]], stderr=subprocess.DEVNULL))

    def test_destination_disk_full(self):
        require_root(self)
        os.makedirs(self.dest)
        self.mount("-t", "tmpfs", "-o", "size=6m", "tmpfs", self.dest)
        sizes = [1 << 20, 3 << 20, 4 << 20, 512 << 10]
        for i, size in enumerate(sizes):
            make_blob(f"{self.card}/DCIM/F{i}.MP4", size)
        write_config(self.config, self.dest, self.db,
                     backup="  concurrent_files: 1\n  max_retries: 0\n")
        p = self.snapsync("backup", self.card, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertGreaterEqual(r["files_failed"], 1)
        self.assertGreaterEqual(r["files_copied"], 1)
        self.assertEqual(r["status"], "partial")
        self.assertIn("full", p.stderr)
        self.assertEqual(self.temporaries(), [])
        # everything at a final name is complete and identical to the card
        copies = [x for x in self.dest_files() if not x.startswith(".")]
        self.assertEqual(len(copies), r["files_copied"])
        for c in copies:
            self.assertEqual(md5(f"{self.dest}/{c}"),
                             md5(f"{self.card}/DCIM/{os.path.basename(c)}"))

    def test_card_on_a_loop_device_is_known_by_its_uuid(self):
        require_root(self)
        # ext4 built from a folder (mkfs.ext4 -d): this kernel may lack vfat, and the identity
        # logic is the same for every filesystem with a UUID
        staging = os.path.join(self.dir, "staging")
        make_photo(f"{staging}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2024:08:09 10:11:12")
        img = os.path.join(self.dir, "card.img")
        with open(img, "wb") as f:
            f.truncate(32 << 20)
        subprocess.run([tool("mkfs.ext4"), "-q", "-L", "EOS_DIGITAL", "-U",
                        "0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", "-d", staging, img], check=True)
        mnt = os.path.join(self.dir, "mnt")
        os.makedirs(mnt)
        self.mount("-o", "loop,ro,nosuid,nodev,noexec", img, mnt)
        r = self.backup(mnt)
        self.assertEqual(r["card_uuid"], "fs:0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d")
        self.assertEqual(r["card_label"], "EOS_DIGITAL")
        self.assertEqual(r["files_copied"], 1)
        self.assertEqual(md5(f"{self.dest}/2024/08/09/IMG_0001.JPG"),
                         md5(f"{staging}/DCIM/100CANON/IMG_0001.JPG"))
        # the same card in another reader / mount point is the same card: nothing to do
        subprocess.run(["umount", mnt], check=True)
        mnt2 = os.path.join(self.dir, "mnt2")
        os.makedirs(mnt2)
        self.mount("-o", "loop,ro", img, mnt2)
        r = self.backup(mnt2)
        self.assertEqual(r["card_uuid"], "fs:0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d")
        self.assertEqual(r["files_skipped"], 1)
        self.assertEqual(r["files_copied"], 0)

    def test_read_error_on_the_card_fails_that_file_only(self):
        require_root(self)
        # squashfs with a corrupted compressed block: the kernel answers EIO for that file only,
        # as a failing card does. A and C are random (stored raw), B is compressible.
        src = os.path.join(self.dir, "src")
        make_blob(f"{src}/DCIM/A.JPG", 256 << 10)
        make_blob(f"{src}/DCIM/C.JPG", 256 << 10)
        with open(f"{src}/DCIM/B.JPG", "w") as f:
            f.write(os.urandom(512 << 10).hex())
        img = os.path.join(self.dir, "card.sqfs")
        subprocess.run([tool("mksquashfs"), src, img, "-noappend", "-quiet", "-comp", "gzip"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(img, "r+b") as f:
            f.seek(96 + (256 << 10) + 200000)  # inside B's compressed blocks
            f.write(b"\xff" * 200)
        mnt = os.path.join(self.dir, "mnt")
        os.makedirs(mnt)
        self.mount("-o", "loop,ro", img, mnt)
        p = self.snapsync("backup", mnt, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertEqual(r["files_failed"], 1)
        self.assertEqual(r["files_copied"], 2)
        self.assertEqual(r["status"], "partial")
        self.assertIn("B.JPG", p.stderr)
        self.assertIn("Input/output error", p.stderr)
        copies = sorted(os.path.basename(x) for x in self.dest_files() if not x.startswith("."))
        self.assertEqual(copies, ["A.JPG", "C.JPG"])
        self.assertEqual(self.temporaries(), [])
        failed = json.loads(self.snapsync("status", "--json", check=0).stdout)
        self.assertEqual(failed["session"]["status"], "partial")
        self.assertIn("B.JPG", failed["session"]["error"])

    def test_unreadable_folder_on_the_card_makes_the_session_partial(self):
        require_root(self)
        img = make_damaged_squashfs(self.dir)
        mnt = os.path.join(self.dir, "mnt")
        os.makedirs(mnt)
        self.mount("-o", "loop,ro", img, mnt)
        p = self.snapsync("backup", mnt, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertEqual(r["status"], "partial")
        # every file seen was copied: the session is partial for what was never seen
        self.assertEqual(r["files_failed"], 0)
        self.assertEqual(r["files_copied"], r["files_total"])
        self.assertLess(r["files_total"], 303)
        self.assertGreater(r["scan_problems"], 1)
        # the folder 100BAD, and each file of 200GOOD whose inode was in the damaged block
        self.assertEqual(r["scan_problems"], 1 + 300 - r["files_total"])
        self.assertIn("'DCIM/100BAD'", p.stderr)
        self.assertRegex(p.stderr, r"error: 'DCIM/100BAD': cannot examine.*Input/output error")
        self.assertIn("DCIM/100BAD", r["error"])
        copies = [os.path.basename(x) for x in self.dest_files() if not x.startswith(".")]
        self.assertEqual(len(copies), r["files_total"])
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)["session"]
        self.assertEqual(st["status"], "partial")
        self.assertFalse(st["safe_to_remove"])
        self.assertEqual(st["scan_problems"], r["scan_problems"])
        entries = st["scan_problem_entries"]
        self.assertEqual(len(entries), min(100, r["scan_problems"]))
        self.assertEqual(entries[0]["path"], "DCIM/100BAD")
        self.assertIn("Input/output error", entries[0]["error"])
        text = self.snapsync("status", check=0).stdout
        self.assertIn("could not be read", text)
        self.assertIn("'DCIM/100BAD'", text)
        # the same card again: still partial, nothing copied twice
        p = self.snapsync("backup", mnt, "--json", check=1)
        r2 = json.loads(p.stdout)
        self.assertEqual(r2["status"], "partial")
        self.assertEqual(r2["files_skipped"], r["files_total"])
