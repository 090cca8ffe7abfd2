# SPDX-License-Identifier: MIT
"""The arm64 build (Raspberry Pi OS 64-bit) for real, under qemu-user-static: cross-compiled by
scripts/cross-arm64.sh, its unit tests run under qemu, then a backup of a sample card to a local
folder by the arm64 binary inside an arm64 Debian 12 minbase root that holds only the runtime
libraries (chroot through binfmt_misc). Root; the roots are made once and kept in build-arm64/."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.environ.get("SNAPSYNC_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
import harness  # noqa: E402

SCRIPT = os.path.join(SOURCE, "scripts", "cross-arm64.sh")
# the script's folder (SNAPSYNC_ARM64_DIR, inside the checkout), and as the roots see it
ARM64_DIR = os.path.join(SOURCE, os.environ.get("SNAPSYNC_ARM64_DIR") or "build-arm64")
ARM64_IN_ROOT = "/src/" + os.path.relpath(ARM64_DIR, SOURCE)


def cross(*args, capture=False):
    return subprocess.run(["sh", SCRIPT, *args], check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)


def md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


class Arm64Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("this test makes roots with mmdebstrap and chroots: run it as root (CI does)")
        cross("unit")      # build root (cached), cross build, unit tests under qemu
        cross("runroot")   # the arm64 runtime root (cached)

    def test_binary_is_arm64(self):
        out = subprocess.run(["file", "-L", os.path.join(ARM64_DIR, "cmake", "snapsync")],
                             check=True, text=True, stdout=subprocess.PIPE).stdout
        self.assertIn("ARM aarch64", out)

    def test_backup_in_arm64_root(self):
        run_root = os.path.join(ARM64_DIR, "run")
        work = tempfile.mkdtemp(prefix="arm64test.", dir=os.path.join(run_root, "tmp"))
        inside = "/tmp/" + os.path.basename(work)  # the same folder as the chroot sees it
        card = os.path.join(work, "card")
        names = []
        for i in range(1, 5):
            name = f"DCIM/100CANON/IMG_000{i}.JPG"
            harness.make_photo(os.path.join(card, name), work, date=f"2024:05:0{i} 10:00:00")
            names.append(name)
        harness.make_blob(os.path.join(card, "DCIM/100CANON/IMG_0005.CR2"), 3 << 20)
        names.append("DCIM/100CANON/IMG_0005.CR2")
        harness.write_config(os.path.join(work, "config.yaml"), f"{inside}/dest", f"{inside}/db.sqlite")

        def snapsync(*args):
            return cross("runin", f"{ARM64_IN_ROOT}/cmake/snapsync", "--config",
                         f"{inside}/config.yaml", *args, capture=True).stdout

        self.assertIn("aarch64", cross("runin", "uname", "-m", capture=True).stdout)
        snapsync("backup", f"{inside}/card")
        copies = {}
        for dirpath, _, files in os.walk(os.path.join(work, "dest")):
            for f in files:
                copies[f] = os.path.join(dirpath, f)
        for name in names:
            base = os.path.basename(name)
            self.assertIn(base, copies, f"{base} not copied: {sorted(copies)}")
            self.assertEqual(md5(copies[base]), md5(os.path.join(card, name)), base)
        self.assertTrue(any("2024" in p and "IMG_0001.JPG" in p for p in copies.values()),
                        "photos are not sorted by their EXIF date")
        sessions = json.loads(snapsync("sessions", "--json"))
        self.assertEqual(len(sessions), 1, sessions)
        s = sessions[0]
        self.assertEqual((s["status"], s["files_total"], s["files_copied"], s["files_failed"]),
                         ("completed", 5, 5, 0), s)
        self.assertEqual(s["source"], f"{inside}/card")
        # a second run finds everything backed up (the arm64 build reads its own database)
        snapsync("backup", f"{inside}/card")
        s = json.loads(snapsync("sessions", "--json"))[0]
        self.assertEqual((s["status"], s["files_skipped"], s["files_copied"]), ("completed", 5, 0), s)
        shutil.rmtree(work)


if __name__ == "__main__":
    unittest.main()
