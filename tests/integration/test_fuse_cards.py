# SPDX-License-Identifier: MIT
"""`snapsync start` with exFAT and FAT32 cards on real kernel loop devices, laid out as cameras
leave them (an MBR partition table, one partition). Where the kernel has no driver for the
filesystem (as on the CI machine, whose kernel has ext4 and fuse but neither vfat nor exfat) the
service mounts the card through a FUSE program: mount.exfat-fuse (Debian's exfat-fuse) or fusefat.
On a kernel that has the driver, the same tests check the kernel mount instead.

The cards are filled without the kernel driver: mtools (mcopy) for FAT, mount.exfat-fuse on a
temporary loop device for exFAT. exfat-fuse was checked against the on-disk timestamps (and a
camera's UTC offset field) and reads modification times right, so the exFAT tests check the date
folders of files that carry no capture date. fusefat 0.1a reports them a month late, so the FAT
tests assert no date at all.

Needs root (CI runs as root) and fails without it; skips, saying why, only where loop devices or
/dev/fuse do not exist. The FUSE programs are test dependencies (scripts/deps.sh --test).
"""

import errno
import glob
import os
import shutil
import sqlite3
import subprocess
import time
import unittest

import test_service
from harness import BIN, make_blob, make_photo, make_video, tool, wait_for

# Where the service looks for FUSE programs (program_dirs in src/cardmount.c).
PROGRAM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
MOUNT_FLAGS = test_service.MOUNT_FLAGS
NOON = "12:00:00"


def unavailable():
    """Why these tests cannot run on this machine, or None."""
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices on this machine (/dev/loop-control is missing)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine: FUSE mounts are impossible"
    if os.geteuid() == 0:
        try:
            os.close(os.open("/dev/fuse", os.O_RDWR))
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENXIO, errno.EPERM, errno.EACCES):
                return f"/dev/fuse cannot be opened ({e.strerror}): FUSE mounts are impossible"
            raise
    return None


def kernel_has(fstype):
    """Whether the kernel has a driver for fstype, loaded or as a module it may load."""
    with open("/proc/filesystems") as f:
        if fstype in (line.split()[-1] for line in f if line.strip()):
            return True
    release = os.uname().release
    return bool(glob.glob(f"/lib/modules/{release}/kernel/fs/**/{fstype}.ko*", recursive=True))


def mount_table():
    """{target: (source, fstype, per-mount options)} from /proc/self/mountinfo."""
    def unescape(s):
        return s.replace("\\040", " ")

    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            fstype, source = right.split()[:2]
            out[unescape(fields[4])] = (unescape(source), fstype, set(fields[5].split(",")))
    return out


def holders(dev):
    """Pids of processes that hold dev open (a FUSE daemon keeps its device until it exits)."""
    real = os.path.realpath(dev)
    pids = []
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        try:
            for fd in os.listdir(fd_dir):
                if os.readlink(os.path.join(fd_dir, fd)) == real:
                    pids.append(int(fd_dir.split("/")[2]))
                    break
        except OSError:
            continue  # gone, or not ours to read
    return pids


def epoch(date):
    """'YYYY-MM-DD' at noon, local time (the service files by local date)."""
    return time.mktime(time.strptime(f"{date} {NOON}", "%Y-%m-%d %H:%M:%S"))


class FuseCardTest(test_service.ServiceTest):
    FUSE = {"exfat": "mount.exfat-fuse", "vfat": "fusefat"}

    def setUp(self):
        why = unavailable()
        if why:
            self.skipTest(why)
        super().setUp()

    # ---- cards ----

    def make_fs_card(self, fstype, label, files, mtimes=None):
        """A card image: MBR with one partition (type 07 for exFAT, 0c for FAT32) holding the
        filesystem, with files {relative path: 'photo' | 'video' | size in bytes}, modification
        times mtimes {relative path: 'YYYY-MM-DD'} (noon). Returns (image path, staging folder)."""
        staging = os.path.join(self.dir, f"{label}.staging")
        for rel, what in files.items():
            path = os.path.join(staging, rel)
            if what == "photo":
                make_photo(path, self.dir, "2024:08:09 10:11:12")
            elif what == "video":
                make_video(path, self.dir)
            else:
                make_blob(path, what)
        for rel, date in (mtimes or {}).items():
            os.utime(os.path.join(staging, rel), (epoch(date), epoch(date)))
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(staging)
                    for f in fs)
        fs_mb = max(total * 12 // 10 // (1 << 20) + 16, 40)  # FAT32 needs 33 MiB at least
        img = os.path.join(self.dir, f"{label}.img")
        fs_img = img + ".fs"
        with open(fs_img, "wb") as f:
            f.truncate(fs_mb << 20)
        if fstype == "vfat":
            subprocess.run([tool("mkfs.vfat"), "-F", "32", "-n", label, fs_img], check=True,
                           stdout=subprocess.DEVNULL)
            tops = [os.path.join(staging, x) for x in sorted(os.listdir(staging))]
            subprocess.run([tool("mcopy"), "-s", "-m", "-Q", "-i", fs_img, *tops, "::/"],
                           check=True)
            part_type = "c"
        elif fstype == "ntfs":
            subprocess.run([tool("mkntfs"), "-F", "-Q", "-L", label, fs_img], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.fill_through_fuse(fs_img, staging, "ntfs-3g")
            part_type = "7"
        else:
            subprocess.run([tool("mkfs.exfat"), "-L", label, fs_img], check=True,
                           stdout=subprocess.DEVNULL)
            self.fill_through_fuse(fs_img, staging, "mount.exfat-fuse")
            part_type = "7"
        with open(img, "wb") as f:
            f.truncate((fs_mb + 2) << 20)
        subprocess.run([tool("sfdisk"), "-q", img],
                       input=f"label: dos\nstart=2048, type={part_type}\n".encode(), check=True,
                       stdout=subprocess.DEVNULL)
        with open(fs_img, "rb") as src, open(img, "r+b") as dst:
            dst.seek(1 << 20)
            shutil.copyfileobj(src, dst, 1 << 20)
        os.unlink(fs_img)
        return img, staging

    def fill_through_fuse(self, fs_img, staging, program):
        """Copies staging into the exFAT or NTFS image, modification times included, through
        its FUSE program on a loop device of its own (it needs a block device)."""
        mnt = fs_img + ".mnt"
        os.makedirs(mnt)
        loop = subprocess.run([tool("losetup"), "-f", "--show", fs_img], check=True,
                              capture_output=True, text=True).stdout.strip()
        try:
            subprocess.run([tool(program), loop, mnt], check=True, stdout=subprocess.DEVNULL)
            try:
                for root, dirs, files in os.walk(staging):
                    rel = os.path.relpath(root, staging)
                    for d in dirs:
                        os.makedirs(os.path.join(mnt, rel, d), exist_ok=True)
                    for f in files:
                        src, dst = os.path.join(root, f), os.path.join(mnt, rel, f)
                        shutil.copyfile(src, dst)
                        st = os.stat(src)
                        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                # fuseblk: umount returns once the daemon has written everything back
                subprocess.run(["umount", mnt], check=True)
        finally:
            subprocess.run([tool("losetup"), "-d", loop], check=True)
        os.rmdir(mnt)

    def insert(self, img, loop):
        """Inserts the card (the placeholder goes, the image comes, partx -a adds the partition
        this kernel does not read itself). Returns the partition's device."""
        dev = "/dev/" + loop
        subprocess.run([tool("losetup"), "-d", dev], stderr=subprocess.DEVNULL)
        wait_for(lambda: not os.path.exists(f"/sys/block/{loop}/loop"), 30, f"{dev} to be free")
        subprocess.run([tool("losetup"), "-P", dev, img], check=True)
        if not os.path.exists(dev + "p1"):
            subprocess.run([tool("partx"), "-a", dev], check=True)
        wait_for(lambda: os.path.exists(dev + "p1"), 10, f"{dev}p1")
        return dev + "p1"

    # ---- checks ----

    def assert_mounted_by(self, fstype, text, dev):
        """The log says how the card was mounted: through the FUSE program when the kernel
        lacks the driver, else by the kernel."""
        program = self.FUSE[fstype]
        if kernel_has(fstype):
            self.assertNotIn("through FUSE", text)
            return None
        self.assertRegex(text, rf"'{dev}': the kernel has no {fstype} driver \(unknown filesystem "
                         rf"type '{fstype}'\): mounting it through FUSE with '/\S*/{program}'")
        self.assertRegex(text, rf"card '[^']*' \({dev}, {fstype}, UUID [^)]*\) at '[^']*', "
                         rf"mounted read-only through FUSE \('/\S*/{program}'\)")
        return program

    def assert_released(self, dev):
        """Nothing holds the card's device any more: the FUSE daemon is gone too."""
        wait_for(lambda: not holders(dev), 10, f"every process to close {dev}")

    def assert_dates(self, expected):
        for rel in expected:
            self.assertTrue(os.path.exists(os.path.join(self.dest, rel)),
                            f"{rel} missing; the destination has {self.dest_files()}")

    def card_uuid(self, dev):
        return subprocess.run([tool("blkid"), "-p", "-o", "value", "-s", "UUID", dev], check=True,
                              capture_output=True, text=True).stdout.strip()

    def mounted_here(self):
        """Mounts under the service's mount_base: {target: (source, fstype, options)}."""
        return {t: v for t, v in mount_table().items() if t.startswith(self.cards + "/")}

    def card_ids(self):
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return [r[0] for r in con.execute("SELECT uuid FROM cards")]
        finally:
            con.close()

    # ---- tests ----

    def inserted_card_is_backed_up_and_unmounted(self, fstype, label, files, mtimes=None,
                                                 dates=()):
        img, staging = self.make_fs_card(fstype, label, files, mtimes)
        [loop] = self.reserve()
        self.service_config()
        self.start()
        dev = self.insert(img, loop)
        text = self.wait_log(r"session \d+ completed.*safe to remove")
        self.assertIn(f"card '{label}' ({dev}, {fstype}", text)
        self.assert_mounted_by(fstype, text, dev)
        self.assertEqual(self.mounted_here(), {})  # unmounted, folder removed
        self.assertEqual(os.listdir(self.cards), [])
        self.assert_released(dev)
        [s] = self.sessions()
        self.assertEqual(s["status"], "completed")
        self.assertEqual(s["safe_to_remove"], 1)
        self.assertEqual(s["files_copied"], len(files))
        self.assertEqual(s["files_failed"], 0)
        self.assertEqual(s["label"], label)
        self.assert_backed_up(staging)
        self.assert_dates(dates)
        # known by its filesystem UUID, as on any other mount
        self.assertEqual(self.card_ids(), [f"fs:{self.card_uuid(dev)}"])
        # left in the reader: the periodic rescan does not mount and back it up again
        self.detach(dev)
        self.wait_log(rf"{label}.*removed")
        self.stop()
        self.assertEqual(len(self.sessions()), 1)

    def card_present_at_start_stays_mounted_read_only(self, fstype, label, fuse_type):
        img, staging = self.make_fs_card(fstype, label, {
            "DCIM/100MEDIA/DSC_0001.JPG": "photo",
            "DCIM/100MEDIA/DSC_0002.MOV": 2 << 20,
        })
        [loop] = self.reserve()
        dev = self.insert(img, loop)
        self.service_config(unmount=False)
        self.start()
        text = self.wait_log(r"session \d+ completed")
        program = self.assert_mounted_by(fstype, text, dev)
        [(target, (source, mounted_type, opts))] = self.mounted_here().items()
        self.assertEqual(os.path.basename(target), label)
        self.assertTrue(MOUNT_FLAGS <= mount_table()[target][2], mount_table()[target])
        if program:
            self.assertEqual(mount_table()[target][:2], (dev, fuse_type))
            daemons = holders(dev)
            self.assertEqual(len(daemons), 1, daemons)
            with open(f"/proc/{daemons[0]}/cmdline", "rb") as f:
                self.assertIn(program.encode(), f.read())
        [s] = self.sessions()
        self.assertEqual(s["status"], "completed")
        self.assertEqual(s["safe_to_remove"], 0)
        self.assert_backed_up(staging)
        self.assertEqual(self.card_ids(), [f"fs:{self.card_uuid(dev)}"])
        text = self.stop()
        self.assertIn(f"unmounted '{target}'", text)
        self.assertEqual(self.mounted_here(), {})
        self.assert_released(dev)

    def test_ntfs_card_through_libmounts_helper_leaves_a_clean_daemon(self):
        # ntfs-3g installs /sbin/mount.ntfs, so libmount runs it itself; the FUSE daemon it
        # leaves must not inherit the service's blocked signals (it would ignore SIGTERM)
        if kernel_has("ntfs3"):
            self.skipTest("this kernel has an ntfs3 driver: libmount's helper is not the only way")
        img, staging = self.make_fs_card("ntfs", "NTFSCARD", {
            "DCIM/100MEDIA/DSC_0001.JPG": "photo",
            "DCIM/100MEDIA/DSC_0002.MOV": 2 << 20,
        }, mtimes={"DCIM/100MEDIA/DSC_0002.MOV": "2022-02-28"})
        [loop] = self.reserve()
        dev = self.insert(img, loop)
        self.service_config(unmount=False)
        self.start()
        text = self.wait_log(r"session \d+ completed")
        self.assertIn(f"card 'NTFSCARD' ({dev}, ntfs, UUID", text)
        self.assertIn("by libmount's helper mount.ntfs", text)
        [(target, (source, fuse_type, opts))] = self.mounted_here().items()
        self.assertEqual((source, fuse_type), (dev, "fuseblk"))
        self.assertTrue(MOUNT_FLAGS <= opts, opts)
        [daemon] = holders(dev)
        with open(f"/proc/{daemon}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        self.assertEqual(int(status["SigBlk"], 16), 0, "the daemon has signals blocked")
        [s] = self.sessions()
        self.assertEqual((s["status"], s["files_copied"]), ("completed", 2))
        self.assert_backed_up(staging)
        self.assert_dates(["2022/02/28/DSC_0002.MOV"])
        text = self.stop()
        self.assertIn(f"unmounted '{target}'", text)
        self.assertEqual(self.mounted_here(), {})
        self.assert_released(dev)

    def test_exfat_card_inserted_is_mounted_read_only_backed_up_and_unmounted(self):
        self.inserted_card_is_backed_up_and_unmounted("exfat", "EXFATCARD", {
            "DCIM/100CANON/IMG_0001.JPG": "photo",
            "DCIM/100CANON/IMG_0002.JPG": "photo",
            "DCIM/100CANON/MVI_0003.MP4": "video",
            "DCIM/101CANON/MVI_0004.MOV": 5 << 20,  # no metadata: filed by modification time
            "DCIM/101CANON/Plage d'été – très longue prise de vue numéro 0005.JPG": "photo",
            "PRIVATE/M4ROOT/CLIP/C0001.MP4": 3 << 20,
        }, mtimes={
            "DCIM/101CANON/MVI_0004.MOV": "2023-07-14",
            "PRIVATE/M4ROOT/CLIP/C0001.MP4": "2022-02-28",  # a month late would be 03-28
        }, dates=(
            "2024/08/09/IMG_0001.JPG",
            "2021/03/04/MVI_0003.MP4",
            "2023/07/14/MVI_0004.MOV",
            "2022/02/28/C0001.MP4",
        ))

    def test_fat32_card_inserted_is_mounted_read_only_backed_up_and_unmounted(self):
        # no date is asserted: fusefat reports modification times a month late
        self.inserted_card_is_backed_up_and_unmounted("vfat", "FAT32CARD", {
            "DCIM/100CANON/IMG_0001.JPG": "photo",
            "DCIM/100CANON/MVI_0002.MP4": "video",
            "DCIM/100CANON/A long file name for a FAT card 0003.JPG": "photo",
            "DCIM/101CANON/MVI_0004.MOV": 5 << 20,
            "PRIVATE/AVCHD/BDMV/STREAM/00000.MTS": 3 << 20,
        })

    def test_exfat_card_present_at_start_stays_mounted_read_only(self):
        self.card_present_at_start_stays_mounted_read_only("exfat", "EXSTAYS", "fuseblk")

    def test_fat32_card_present_at_start_stays_mounted_read_only(self):
        self.card_present_at_start_stays_mounted_read_only("vfat", "FATSTAYS", "fuse.fusefat")

    def test_exfat_card_mounted_through_fuse_by_someone_else_is_used_where_it_is(self):
        img, staging = self.make_fs_card("exfat", "OTHERS", {"DCIM/A.JPG": "photo",
                                                            "DCIM/B.MP4": 1 << 20})
        [loop] = self.reserve()
        dev = self.insert(img, loop)
        target = os.path.join(self.dir, "elsewhere")  # neither ours nor a watched folder
        os.makedirs(target)
        subprocess.run([tool("mount.exfat-fuse"), "-o", "ro", dev, target], check=True,
                       stdout=subprocess.DEVNULL)
        self.service_config()
        self.start()
        text = self.wait_log(r"session \d+ completed")
        self.assertIn(f"card 'OTHERS' ({dev}, exfat", text)
        self.assertNotIn("mounting it through FUSE", text)
        [s] = self.sessions()
        self.assertEqual(s["status"], "completed")
        self.assertEqual(s["safe_to_remove"], 0)  # not ours to unmount
        self.assertEqual(s["source"], target)
        self.assertEqual(self.mounted_here(), {})  # not mounted a second time
        self.assertEqual(mount_table()[target][:2], (dev, "fuseblk"))
        self.assert_backed_up(staging)
        self.assertEqual(self.card_ids(), [f"fs:{self.card_uuid(dev)}"])
        self.stop()
        self.assertIn(target, mount_table())

    def test_fat_card_over_2_gib_is_refused_rather_than_read_by_fusefat(self):
        # fusefat 0.1a shows folders stored past 2 GiB as empty: such a card would be "backed up"
        # with files missing, and declared safe to remove
        if kernel_has("vfat"):
            self.skipTest("this kernel has a vfat driver: fusefat is never used")
        img = os.path.join(self.dir, "BIGFAT.img")
        with open(img, "wb") as f:
            f.truncate((2 << 30) + (64 << 20))  # sparse
        subprocess.run([tool("sfdisk"), "-q", img], input=b"label: dos\nstart=2048, type=c\n",
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([tool("mkfs.vfat"), "-F", "32", "-n", "BIGFAT", "--offset", "2048", img],
                       check=True, stdout=subprocess.DEVNULL)
        [loop] = self.reserve()
        self.service_config()
        self.start()
        dev = self.insert(img, loop)
        text = self.wait_log(r"error: cannot mount")
        self.assertIn(f"error: cannot mount '{dev}' (vfat): the kernel has no vfat driver (unknown "
                      f"filesystem type 'vfat'), and fusefat misses files on filesystems over "
                      f"2048 MiB (this one has 2111 MiB): use a kernel with the vfat driver", text)
        self.assertNotIn("backing up", text)
        self.assertEqual(self.mounted_here(), {})
        self.stop()
        self.assertEqual(self.sessions(), [])

    def test_missing_fuse_program_is_reported_with_its_package(self):
        if kernel_has("exfat"):
            self.skipTest("this kernel has an exfat driver: the FUSE fallback is never used")
        img, _ = self.make_fs_card("exfat", "NOHELPER", {"DCIM/A.JPG": "photo"})
        [loop] = self.reserve()
        self.service_config()
        # the service runs in a mount namespace of its own where mount.exfat-fuse is /dev/null
        found = [os.path.join(d, "mount.exfat-fuse") for d in PROGRAM_DIRS]
        hidden = sorted({os.path.realpath(p) for p in found if os.path.isfile(p)})
        self.assertTrue(hidden, "mount.exfat-fuse is not installed (scripts/deps.sh --test)")
        script = "".join(f"mount --bind /dev/null '{p}' && " for p in hidden) + 'exec "$@"'
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [tool("unshare"), "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             BIN, "--config", self.config, "start"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.log_file, cwd=self.dir)
        self.wait_log(r"snapsync \S+ started")
        dev = self.insert(img, loop)
        text = self.wait_log(r"error: cannot mount")
        self.assertIn(f"error: cannot mount '{dev}' (exfat): the kernel has no exfat driver "
                      f"(unknown filesystem type 'exfat') and mount.exfat-fuse is not installed: "
                      f"install the Debian package exfat-fuse", text)
        self.assertNotIn("backing up", text)
        self.stop()
        self.assertEqual(self.sessions(), [])
        self.assertEqual(os.listdir(self.cards), [])


def load_tests(loader, standard_tests, pattern):
    """The tests of this file only, not those FuseCardTest inherits from ServiceTest."""
    names = sorted(n for n in vars(FuseCardTest) if n.startswith("test_"))
    return unittest.TestSuite(FuseCardTest(n) for n in names)
