# SPDX-License-Identifier: MIT
"""The arm64 build (Raspberry Pi OS 64-bit) for real, under qemu-user-static: cross-compiled by
scripts/cross-arm64.sh, its unit tests run under qemu, then a backup of a sample card to a local
folder by the arm64 binary inside an arm64 Debian 12 minbase root that holds only the runtime
libraries (chroot through binfmt_misc); and the arm64 .deb (scripts/package.sh --arch arm64, or
SNAPSYNC_DEB_ARM64) installed with apt-get into a copy of that root, where --version, the man page
and a backup with the packaged configuration work. Root; the roots are made once and kept in
build-arm64/."""
import hashlib
import json
import os
import re
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
        cls.deb = os.environ.get("SNAPSYNC_DEB_ARM64")
        if not cls.deb:
            subprocess.run(["sh", os.path.join(SOURCE, "scripts", "package.sh"), "--arch", "arm64"],
                           check=True)
            with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
                version = re.search(r"project\(snapsync VERSION ([0-9.]+)", f.read()).group(1)
            cls.deb = os.path.join(SOURCE, "dist", f"snapsync_{version}_arm64.deb")

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

    def test_deb_in_arm64_root(self):
        """apt-get install ./snapsync_VERSION_arm64.deb as on a Raspberry Pi, like test_deb.sh for
        amd64: into a fresh copy of the arm64 runtime root (the cached one stays as it is)."""
        name = "deb-root"
        root = os.path.join(ARM64_DIR, name)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["cp", "-a", os.path.join(ARM64_DIR, "run"), root], check=True)
        try:
            # no service starts in the chroot (no systemd runs there)
            with open(os.path.join(root, "usr/sbin/policy-rc.d"), "w") as f:
                f.write("#!/bin/sh\nexit 101\n")
            os.chmod(os.path.join(root, "usr/sbin/policy-rc.d"), 0o755)
            shutil.copy("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
            shutil.copy(self.deb, os.path.join(root, "tmp"))
            deb = "/tmp/" + os.path.basename(self.deb)

            def inroot(*args):
                return cross("in", name, *args, capture=True).stdout

            inroot("apt-get", "update", "-qq")
            inroot("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
                   "--no-install-recommends", deb, "man-db")
            self.assertIn("aarch64", inroot("uname", "-m"))
            version = subprocess.run(["dpkg-deb", "-f", self.deb, "Version"], check=True, text=True,
                                     stdout=subprocess.PIPE).stdout.strip()
            self.assertEqual(inroot("snapsync", "--version").strip(), f"snapsync {version}")
            page = inroot("sh", "-c", "MANWIDTH=80 man snapsync 2>&1 | col -b")
            self.assertIn("test-connection", page)
            self.assertIn("EXIT STATUS", page)
            self.assertEqual(os.stat(os.path.join(root, "etc/snapsync/.env")).st_mode & 0o777, 0o600)
            # a sample card backed up with the packaged /etc/snapsync/config.yaml
            card = os.path.join(root, "tmp/card/DCIM/100CANON")
            os.makedirs(card)
            for i in range(1, 4):
                with open(os.path.join(card, f"IMG_000{i}.JPG"), "wb") as f:
                    f.write(os.urandom(i * 70000))
            inroot("snapsync", "--config", "/etc/snapsync/config.yaml", "backup", "/tmp/card")
            copies = {}
            for dirpath, _, files in os.walk(os.path.join(root, "var/lib/snapsync/backup")):
                for f in files:
                    copies[f] = os.path.join(dirpath, f)
            for i in range(1, 4):
                base = f"IMG_000{i}.JPG"
                self.assertIn(base, copies, f"{base} not in /var/lib/snapsync/backup: {sorted(copies)}")
                self.assertEqual(md5(copies[base]), md5(os.path.join(card, base)), base)
            self.assertTrue(os.path.isfile(os.path.join(root, "var/lib/snapsync/snapsync.db")))
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
