# SPDX-License-Identifier: MIT
"""`snapsync start` with real kernel devices: ext4 card images with a partition table on loop
devices, attached and detached while the service runs. Needs root (CI runs as root); fails
without it rather than skipping.

This kernel parses no partition table itself (no MSDOS/EFI partition support), so after
`losetup -P` the partitions are added with `partx -a` (BLKPG), which sends the same `add` uevent a
card reader's partition does. Every wait reads the service's log or the database with a deadline.
"""

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time

from harness import SANITIZER_MARKS, BIN, SnapsyncTest, make_blob, make_damaged_squashfs, \
    make_photo, md5, slow, tool, wait_for, write_config

MOUNT_FLAGS = {"ro", "nosuid", "nodev", "noexec"}


def require_root(test):
    if os.geteuid() != 0:
        test.fail("this test needs root (loop devices, mount); CI runs as root")


def mounts():
    """{target: (source, options)} from /proc/self/mounts."""
    out = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            src, target, _fs, opts = line.split()[:4]
            out[target.replace("\\040", " ")] = (src, set(opts.split(",")))
    return out


class Notifier:
    """The service manager's end of NOTIFY_SOCKET. Like systemd it reads every message as it
    comes (a reader thread): a datagram socket nobody reads fills up, and the service's
    sd_notify() then blocks (a stop waited forever on a full queue of WATCHDOG=1)."""

    def __init__(self):
        # AF_UNIX paths are short: not under the test folder
        self.dir = tempfile.mkdtemp(prefix="snapsync-notify.")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []
        self.seen = 0  # messages wait_for has looked at
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            try:
                msg = self.sock.recv(4096)
            except OSError:
                msg = b""
            with self.cond:
                if not msg:
                    self.messages.append(None)  # closed
                    self.cond.notify_all()
                    return
                self.messages.append(msg.decode())
                self.cond.notify_all()

    def wait_for(self, what, timeout):
        """True when a message not looked at before has the line what (consumed with those
        before it), False after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                while self.seen < len(self.messages):
                    msg = self.messages[self.seen]
                    self.seen += 1
                    if msg is not None and what in msg.split("\n"):
                        return True
                left = deadline - time.monotonic()
                if left <= 0 or (self.messages and self.messages[-1] is None):
                    return False
                self.cond.wait(left)

    def close(self):
        if self.sock.fileno() < 0:
            return
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        self.thread.join()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ServiceTest(SnapsyncTest):
    def setUp(self):
        super().setUp()
        require_root(self)
        self.cards = os.path.join(self.dir, "cards")
        self.media = os.path.join(self.dir, "media")
        os.makedirs(self.media)
        self.log_path = os.path.join(self.dir, "service.log")
        self.proc = None
        self.loops = []
        # order of cleanups (reversed): stop the service, unmount, detach
        self.cleanups.append(self.detach_all)
        self.cleanups.append(self.unmount_all)
        self.cleanups.append(self.kill_service)

    # ---- cards ----

    def make_card(self, name, files, label=None, partitioned=True):
        """A card image: GPT with one partition holding ext4 (mkfs.ext4 -d) with files
        {relative path: size in bytes, or 'photo'}. Returns (image path, staging folder)."""
        staging = os.path.join(self.dir, f"{name}.staging")
        for rel, size in files.items():
            if size == "photo":
                make_photo(os.path.join(staging, rel), self.dir, "2024:08:09 10:11:12")
            else:
                make_blob(os.path.join(staging, rel), size)
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(staging)
                    for f in fs)
        fs_mb = total * 12 // 10 // (1 << 20) + 16
        img = os.path.join(self.dir, f"{name}.img")
        fs_img = img + ".fs" if partitioned else img
        with open(fs_img, "wb") as f:
            f.truncate(fs_mb << 20)
        subprocess.run([tool("mkfs.ext4"), "-q", "-L", label or name, "-d", staging, fs_img],
                       check=True)
        if partitioned:
            with open(img, "wb") as f:
                f.truncate((fs_mb + 2) << 20)
            subprocess.run([tool("sfdisk"), "-q", img], input=b"label: gpt\nstart=2048, type=L\n",
                           check=True, stdout=subprocess.DEVNULL)
            with open(fs_img, "rb") as src, open(img, "r+b") as dst:
                dst.seek(1 << 20)
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    dst.write(block)
            os.unlink(fs_img)
        return img, staging

    def reserve(self, n=1):
        """Claims n loop devices with a blank placeholder each and returns their names. The
        service accepts only these (sd_card.devices), so another test run on the same machine
        attaching loop devices at the same time cannot disturb this one."""
        placeholder = os.path.join(self.dir, "placeholder.img")
        with open(placeholder, "wb") as f:
            f.truncate(1 << 20)
        for _ in range(n):
            dev = subprocess.run([tool("losetup"), "-f", "--show", placeholder], check=True,
                                 capture_output=True, text=True).stdout.strip()
            self.loops.append(dev)
        return [os.path.basename(d) for d in self.loops[-n:]]

    def attach(self, img, dev):
        """Inserts the card: the placeholder goes, the image comes (losetup -P), then partx -a
        where the kernel did not add the partitions. Returns the device of the filesystem."""
        dev = "/dev/" + dev
        subprocess.run([tool("losetup"), "-d", dev], stderr=subprocess.DEVNULL)
        wait_for(lambda: not os.path.exists(f"/sys/block/{os.path.basename(dev)}/loop"), 30,
                 f"{dev} to be free")
        subprocess.run([tool("losetup"), "-P", dev, img], check=True)
        with open(img, "rb") as f:
            f.seek(512)
            partitioned = f.read(8) == b"EFI PART"
        if not partitioned:
            return dev
        if not os.path.exists(dev + "p1"):
            subprocess.run([tool("partx"), "-a", dev], check=True)
        wait_for(lambda: os.path.exists(dev + "p1"), 10, f"{dev}p1")
        return dev + "p1"

    def detach(self, dev):
        disk = re.sub(r"p\d+$", "", dev)
        subprocess.run([tool("losetup"), "-d", disk], stderr=subprocess.DEVNULL)

    def detach_all(self):
        for dev in self.loops:
            subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL)

    def unmount_all(self):
        for target in sorted(mounts(), reverse=True):
            if target.startswith(self.dir + "/"):
                subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL)

    # ---- the service ----

    def service_config(self, devices=None, ignore=(), unmount=True, backup=None):
        if devices is None:
            devices = [p for d in self.loops for p in (os.path.basename(d), os.path.basename(d) + "p*")]
        quoted = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"
        write_config(self.config, self.dest, self.db, backup=backup,
                     extra=f"""sd_card:
  auto_detect: true
  devices: {quoted(devices)}
  ignore_devices: {quoted(ignore)}
  mount_base: {self.cards}
  mount_points: [{self.media}]
  unmount_when_done: {"true" if unmount else "false"}
  poll_interval: 1
""")

    def start(self, watchdog_usec=None):
        self.notify = Notifier()
        self.cleanups.append(self.notify.close)
        env = dict(self.env, NOTIFY_SOCKET=self.notify.path)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen([BIN, "--config", self.config, "start"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log_file,
                                     cwd=self.dir)
        self.wait_notify("READY=1")

    def wait_notify(self, what, timeout=30):
        if not self.notify.wait_for(what, timeout):
            self.fail(f"no {what} from the service\n{self.log()}")

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, pattern, count=1, timeout=60):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if len(rx.findall(text)) >= count:
                return text
            if self.proc.poll() is not None:
                self.fail(f"service exited {self.proc.returncode} waiting for {pattern!r}:\n{text}")
            time.sleep(0.01)
        self.fail(f"timed out waiting for {pattern!r} in the service log:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM, timeout=120):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        text = self.log()
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, text, f"sanitizer report:\n{text}")
        self.assertEqual(rc, 0, text)
        self.proc = None
        return text

    def kill_service(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "log_file", None):
            self.log_file.close()
        if getattr(self, "notify", None):
            self.notify.close()

    # ---- the database ----

    def sessions(self):
        if not os.path.exists(self.db):
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(
                "SELECT s.*, c.label FROM sessions s LEFT JOIN cards c ON c.id = s.card_id "
                "ORDER BY s.id")]
        finally:
            con.close()

    def assert_backed_up(self, staging):
        """Every file of the staging folder is at the destination exactly once, identical."""
        copies = {}
        for rel in self.dest_files():
            if not rel.startswith("."):
                copies.setdefault(os.path.basename(rel), []).append(rel)
        for root, _, files in os.walk(staging):
            for f in files:
                self.assertEqual(len(copies.get(f, [])), 1, f"{f}: {copies.get(f)}")
                self.assertEqual(md5(os.path.join(self.dest, copies[f][0])),
                                 md5(os.path.join(root, f)), f)
        self.assertEqual(self.temporaries(), [])

    def our_mounts(self):
        return {t: v for t, v in mounts().items() if t.startswith(self.cards + "/")}

    # ---- tests ----

    def test_inserted_card_is_mounted_read_only_backed_up_and_unmounted(self):
        img, staging = self.make_card("EOS_DIGITAL", {
            "DCIM/100CANON/IMG_0001.JPG": "photo",
            "DCIM/100CANON/IMG_0002.JPG": "photo",
            "DCIM/100CANON/MVI_0003.MP4": 3 << 20,
            "MISC/notes.txt": 100,
        })
        [loop] = self.reserve()
        self.service_config()
        self.start()
        t0 = time.monotonic()
        dev = self.attach(img, loop)
        text = self.wait_log(r"session \d+ completed.*safe to remove")
        elapsed = time.monotonic() - t0
        self.assertIn(f"card 'EOS_DIGITAL' ({dev}, ext4", text)
        self.assertIn("mounted read-only", text)
        self.assertEqual(self.our_mounts(), {})  # unmounted, folder removed
        self.assertEqual(os.listdir(self.cards), [])
        [s] = self.sessions()
        self.assertEqual(s["status"], "completed")
        self.assertEqual(s["safe_to_remove"], 1)
        self.assertEqual(s["files_copied"], 3)
        self.assertEqual(s["label"], "EOS_DIGITAL")
        import json
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)
        self.assertTrue(st["session"]["safe_to_remove"])
        self.assertIn("safe to remove", self.snapsync("status", check=0).stdout)
        self.assertTrue(os.path.exists(f"{self.dest}/2024/08/09/IMG_0001.JPG"))
        self.assertFalse(any(p.endswith("notes.txt") for p in self.dest_files()))
        self.assertLess(elapsed, 60)
        # the card stays in the reader: the periodic rescan must not back it up again
        self.detach(dev)
        self.wait_log(r"EOS_DIGITAL.*removed")
        self.stop()
        self.assertEqual(len(self.sessions()), 1)

    def test_card_present_at_start_stays_mounted_read_only_when_asked(self):
        img, staging = self.make_card("PRESENT", {"DCIM/A.JPG": "photo", "DCIM/B.MP4": 1 << 20})
        [loop] = self.reserve()
        self.attach(img, loop)
        self.service_config(unmount=False)
        self.start()
        self.wait_log(r"session \d+ completed")
        [(target, (src, opts))] = self.our_mounts().items()
        self.assertEqual(os.path.basename(target), "PRESENT")
        self.assertTrue(MOUNT_FLAGS <= opts, opts)
        [s] = self.sessions()
        self.assertEqual(s["status"], "completed")
        self.assertEqual(s["safe_to_remove"], 0)
        self.assert_backed_up(staging)
        text = self.stop()
        self.assertIn(f"unmounted '{target}'", text)
        self.assertEqual(self.our_mounts(), {})

    def test_dashboard_eject_unmounts_a_card_left_mounted(self):
        import json
        import urllib.request
        img, staging = self.make_card("EJECTME", {"DCIM/A.JPG": "photo"})
        [loop] = self.reserve()
        self.service_config(unmount=False)
        with open(self.config) as f:
            port = int(re.search(r"web_ui_port: (\d+)", f.read()).group(1))
        self.start()
        self.attach(img, loop)
        self.wait_log(r"session \d+ completed")
        self.assertEqual(len(self.our_mounts()), 1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/cards/eject", data=b"{}",
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertIn(r.status, (200, 202))
            json.loads(r.read())
        self.wait_log(r"card 'EJECTME' ejected: safe to remove")
        self.assertEqual(self.our_mounts(), {})
        self.assert_backed_up(staging)
        self.stop()

    def test_card_mounted_by_someone_else_under_a_watched_folder(self):
        img, staging = self.make_card("OTHER", {"DCIM/C.JPG": "photo"})
        [loop] = self.reserve()
        self.service_config(devices=())  # loop devices are not cards: only the mount counts
        self.start()
        dev = self.attach(img, loop)
        target = os.path.join(self.media, "OTHER")
        os.makedirs(target)
        subprocess.run(["mount", "-o", "ro", dev, target], check=True)
        self.wait_log(r"session \d+ completed")
        [s] = self.sessions()
        self.assertEqual(s["status"], "completed")
        self.assertEqual(s["safe_to_remove"], 0)
        self.assertEqual(s["source"], target)
        self.assertIn(target, mounts())  # not ours: left mounted
        self.assertEqual(self.our_mounts(), {})
        self.assert_backed_up(staging)
        self.stop()
        self.assertIn(target, mounts())

    def test_card_pulled_during_backup_is_interrupted_then_resumes(self):
        files = {f"DCIM/BIG{i}.MP4": 48 << 20 for i in range(4)}
        img, staging = self.make_card("PULLED", files)
        [loop] = self.reserve()
        self.service_config(backup="  concurrent_files: 1\n  max_retries: 0\n")
        self.start()
        dev = self.attach(img, loop)
        self.wait_log(r"4 files .* to back up")
        [target] = self.our_mounts()
        # the card goes away: its filesystem vanishes, then the device
        subprocess.run(["umount", "-l", target], check=True)
        self.detach(dev)
        self.wait_log(r"session \d+ interrupted")
        [s] = self.sessions()
        self.assertEqual(s["status"], "interrupted")
        self.assertLess(s["files_copied"], 4)
        self.assertEqual(self.temporaries(), [])
        # whatever is at a final name is complete
        for rel in self.dest_files():
            if not rel.startswith("."):
                self.assertEqual(md5(os.path.join(self.dest, rel)),
                                 md5(os.path.join(staging, "DCIM", os.path.basename(rel))))
        # it comes back: the backup finishes, nothing lost or doubled
        wait_for(lambda: not os.path.exists(dev), 30, f"{dev} to go away")
        self.attach(img, loop)
        self.wait_log(r"session \d+ completed.*safe to remove")
        sessions = self.sessions()
        self.assertEqual([x["status"] for x in sessions], ["interrupted", "completed"])
        self.assertEqual(sessions[0]["files_copied"] + sessions[1]["files_copied"]
                         + sessions[1]["files_duplicate"], 4)
        self.assert_backed_up(staging)
        self.stop()

    def test_card_with_an_unreadable_folder_is_never_safe_to_remove(self):
        img = make_damaged_squashfs(self.dir)
        [loop] = self.reserve()
        self.service_config()
        self.start()
        self.attach(img, loop)
        text = self.wait_log(r"card '.*': session \d+ partial")
        line = re.search(r"card '.*': session \d+ partial.*", text).group(0)
        self.assertNotIn("safe to remove", line)
        self.assertRegex(text, r"error: 'DCIM/100BAD': cannot examine.*Input/output error")
        [s] = self.sessions()
        self.assertEqual(s["status"], "partial")
        self.assertEqual(s["safe_to_remove"], 0)
        self.assertIn("DCIM/100BAD", s["error"])
        self.assertEqual(len(self.our_mounts()), 1)  # left mounted: nothing says pull it
        self.stop()

    def test_session_result_is_notified_once(self):
        from test_notify import HookServer
        import json
        hook = HookServer(self)
        self.cleanups.append(hook.stop)
        img, _ = self.make_card("NOTIFY_ME", {"DCIM/100CANON/IMG_0001.JPG": "photo",
                                              "DCIM/100CANON/IMG_0002.JPG": "photo"})
        [loop] = self.reserve()
        self.service_config()
        with open(self.config, "a") as f:
            f.write(f"notify:\n  webhooks:\n    - {{url: \"{hook.url}/hook\", format: json}}\n")
        self.start()
        self.attach(img, loop)
        text = self.wait_log(r"notification '.*NOTIFY_ME.*' sent on webhook:")
        self.assertEqual(len(hook.requests), 1, text)
        m = json.loads(hook.requests[0][3])
        self.assertEqual((m["card"], m["result"], m["counts"]["copied"], m["safe_to_remove"]),
                         ("NOTIFY_ME", "completed", 2, True))
        self.stop()
        self.assertEqual(len(hook.requests), 1)

    @slow
    def test_a_destination_down_is_notified_once_after_destination_down_minutes(self):
        from test_notify import HookServer
        import json
        hook = HookServer(self)
        self.cleanups.append(hook.stop)
        img, _ = self.make_card("DOWN_DEST", {"DCIM/100CANON/IMG_0001.JPG": "photo"})
        [loop] = self.reserve()
        self.service_config()
        # the smallest threshold the config takes: 1 minute
        with open(self.config, "a") as f:
            f.write(f"notify:\n  destination_down_minutes: 1\n"
                    f"  webhooks:\n    - {{url: \"{hook.url}/hook\", format: json}}\n")
        with open(self.dest, "w") as f:  # the destination's folder is a file: it is down
            f.write("not a folder")
        self.start()
        self.attach(img, loop)
        self.wait_log(r"card 'DOWN_DEST': session \d+ failed")
        # the session has ended: the outage goes on while the service is idle
        text = self.wait_log(r"notification 'SnapSync: destination .* down for 1 min' sent on "
                             r"webhook:", timeout=150)
        self.assertRegex(text, r"destination unraid: .* down for 1 min: .*Not a directory")
        events = [json.loads(r[3]) for r in hook.requests]
        down = [m for m in events if m["event"] == "destination_down"]
        self.assertEqual(len(down), 1, events)
        # named by section and label (cut to 128 bytes, a long test folder may be)
        name = down[0]["destination"]
        self.assertTrue(name.startswith("unraid: local /"), name)
        self.assertTrue(self.dest.startswith(name[len("unraid: local "):]), name)
        self.assertIn("Not a directory", down[0]["reason"])
        self.assertEqual(down[0]["down_minutes"], 1)
        self.stop()
        self.assertEqual(len([m for m in (json.loads(r[3]) for r in hook.requests)
                              if m["event"] == "destination_down"]), 1)

    def test_card_without_photos_is_empty_and_safe_to_remove(self):
        img, _ = self.make_card("NOPHOTOS", {"MISC/notes.txt": 100})
        [loop] = self.reserve()
        self.service_config()
        self.start()
        self.attach(img, loop)
        self.wait_log(r"card 'NOPHOTOS': session \d+ empty.*safe to remove")
        [s] = self.sessions()
        self.assertEqual(s["status"], "empty")
        self.assertEqual(s["safe_to_remove"], 1)
        self.assertEqual(self.our_mounts(), {})
        self.stop()

    def test_a_share_down_shows_on_the_dashboard_then_its_files_go_when_it_is_back(self):
        import json
        import urllib.request
        img, _ = self.make_card("EOS_R6", {"DCIM/100EOSR6/IMG_0001.JPG": "photo",
                                           "DCIM/100EOSR6/MVI_0002.MP4": 1 << 20})
        [loop] = self.reserve()
        self.service_config(backup="  concurrent_files: 1\n  max_retries: 0\n"
                                   "  destination_wait: 300\n")
        local = os.path.join(self.dir, "local")
        with open(self.config, "a") as f:
            f.write(f"local:\n  enabled: true\n  path: {local}\n")
        with open(self.config) as f:
            port = int(re.search(r"web_ui_port: (\d+)", f.read()).group(1))
        with open(self.dest, "w") as f:  # the share's folder is a file: the share is down
            f.write("not a folder")
        self.start()
        self.attach(img, loop)

        def down_entry():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as r:
                st = json.loads(r.read())
            for a in st["active"]:
                for d in a["destinations"]:
                    if d.get("down"):
                        return d
            return None
        wait_for(down_entry, 60, "the share shown down on the dashboard")
        d = down_entry()
        self.assertTrue(d["name"].startswith("local:" + self.dest), d)
        self.assertIn("Not a directory", d["problem"])
        self.assertEqual(self.log().count("destination down"), 1, self.log())
        # the local folder got both files meanwhile; the card is not called safe
        wait_for(lambda: len([f for d, _, fs in os.walk(local) for f in fs
                              if not f.endswith(".part") and not d.endswith("ascmhl")]) == 2,
                 60, "the local copies")
        [s] = self.sessions()
        self.assertEqual(s["safe_to_remove"], 0)

        os.remove(self.dest)  # the share is back: its files go in the same session
        os.makedirs(self.dest)
        self.wait_log(r"destination back")
        self.wait_log(r"card 'EOS_R6': session \d+ completed.*safe to remove")
        [s] = self.sessions()
        self.assertEqual((s["status"], s["safe_to_remove"]), ("completed", 1))
        self.assertEqual(len([f for d, _, fs in os.walk(self.dest) for f in fs
                              if not f.endswith(".part") and not d.endswith("ascmhl")]), 2)
        self.stop()

    def test_two_cards_at_once(self):
        img1, st1 = self.make_card("CARD_A", {f"DCIM/A{i}.MP4": 4 << 20 for i in range(3)})
        img2, st2 = self.make_card("CARD_B", {f"DCIM/B{i}.MP4": 4 << 20 for i in range(3)})
        loops = self.reserve(2)
        self.service_config()
        self.start()
        self.attach(img1, loops[0])
        self.attach(img2, loops[1])
        self.wait_log(r"session \d+ completed.*safe to remove", count=2)
        sessions = self.sessions()
        self.assertEqual(sorted(s["label"] for s in sessions), ["CARD_A", "CARD_B"])
        for s in sessions:
            self.assertEqual(s["status"], "completed")
            self.assertEqual(s["safe_to_remove"], 1)
            self.assertIsNone(s["error"])
        self.assert_backed_up(st1)
        self.assert_backed_up(st2)
        self.stop()

    def test_sigterm_during_backup_stops_gracefully(self):
        img, staging = self.make_card("STOPPED", {f"DCIM/S{i}.MP4": 48 << 20 for i in range(4)})
        [loop] = self.reserve()
        self.service_config()
        self.start(watchdog_usec=200000)
        self.wait_notify("WATCHDOG=1")
        self.attach(img, loop)
        self.wait_log(r"4 files .* to back up")
        text = self.stop(signal.SIGTERM)
        self.assertIn("stopping", text)
        [s] = self.sessions()
        self.assertEqual(s["status"], "interrupted")
        self.assertEqual(self.temporaries(), [])
        self.assertEqual(self.our_mounts(), {})
        # a later start resumes and completes
        self.notify.close()
        self.log_file.close()
        self.start()
        self.wait_log(r"session \d+ completed.*safe to remove")
        self.assert_backed_up(staging)
        self.stop()

    def scrub_thread(self):
        """The tid of the service's scrub thread while a slice runs, else None."""
        tasks = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(tasks):
            try:
                with open(f"{tasks}/{tid}/comm") as f:
                    if f.read().strip() == "snapsync-scrub":
                        return int(tid)
            except FileNotFoundError:
                pass  # a thread that just ended
        return None

    def scrub_runs(self):
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("select id, status, checked, ok, missing from verify_runs "
                               "where scope = 'scrub' order by id").fetchall()
        finally:
            con.close()

    def test_scrub_checks_old_copies_idly_pauses_for_a_card_and_resumes(self):
        for i in range(6):
            make_blob(f"{self.card}/DCIM/OLD{i}.MP4", 4 << 20)
        r = self.backup()
        self.assertEqual(r["files_copied"], 6, r)
        # copies made 40 days ago; one of them has since gone from the destination
        con = sqlite3.connect(self.db)
        con.execute("update copies set verified_at = verified_at - 40 * 86400")
        con.commit()
        con.close()
        [gone] = [f for f in self.dest_files() if f.endswith("OLD3.MP4")]
        os.unlink(os.path.join(self.dest, gone))

        img, staging = self.make_card("NEWCARD", {"DCIM/NEW.JPG": "photo"})
        [loop] = self.reserve()
        # 2 MB/s: the six copies take some 12 s, time for a card to go in mid-scrub
        self.service_config(backup="  verify_interval_days: 30\n  verify_rate: 2\n")
        self.start()
        self.wait_log(r"scrub: copies made and last checked more than 30 days ago")
        deadline = time.monotonic() + 60
        while not self.scrub_runs() and time.monotonic() < deadline:
            time.sleep(0.05)  # the slice starts SCRUB_IDLE_S after the start
        self.assertTrue(self.scrub_runs(), self.log())
        tid = self.scrub_thread()
        self.assertIsNotNone(tid, self.log())
        # idle I/O class and nice 19, for that thread only
        io = subprocess.run(["ionice", "-p", str(tid)], capture_output=True, text=True,
                            check=True).stdout
        self.assertIn("idle", io)
        with open(f"/proc/{self.proc.pid}/task/{tid}/stat") as f:
            self.assertEqual(int(f.read().rsplit(")", 1)[1].split()[16]), 19)
        with open(f"/proc/{self.proc.pid}/stat") as f:
            self.assertEqual(int(f.read().rsplit(")", 1)[1].split()[16]), 0)

        self.attach(img, loop)  # a card goes in: the scrub makes way
        self.wait_log(r"scrub: paused \(a card went in\)")
        self.wait_log(r"scrub: verification run \d+ interrupted")
        self.wait_log(r"session \d+ completed")
        self.assert_backed_up(staging)
        # and goes on once the card is done, with the copies it had not checked
        text = self.wait_log(r"scrub: verification run \d+ problems", timeout=90)
        self.assertRegex(text, r"scrub: missing: local \S+ \S+OLD3\.MP4 \(card file "
                               r"DCIM/OLD3\.MP4\): no such file")
        runs = self.scrub_runs()
        self.assertEqual([r[1] for r in runs], ["interrupted", "problems"], runs)
        self.assertEqual(sum(r[2] for r in runs), 6, runs)  # each copy checked once
        self.assertEqual(sum(r[4] for r in runs), 1, runs)
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        checked = dict(con.execute("select f.rel_path, c.check_result from copies c "
                                   "join files f on f.id = c.file_id").fetchall())
        con.close()
        self.assertEqual(checked.pop("DCIM/NEW.JPG"), None)  # new: not due for 30 days
        self.assertEqual(checked.pop("DCIM/OLD3.MP4"), "missing")
        self.assertEqual(set(checked.values()), {"ok"}, checked)
        self.stop()

    def test_start_repairs_what_a_dead_process_left(self):
        """A session whose process died shows as running (its pid now taken by a process that
        started later), with a file stuck in verifying and a copy stuck in copying: the service
        marks it interrupted and puts the file and the copy back when it starts."""
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.backup()
        write_config(self.config, self.dest, self.db, extra="sd_card:\n  auto_detect: false\n")
        impostor = subprocess.Popen(["cat"], stdin=subprocess.PIPE)  # started after the session
        self.cleanups.append(lambda: (impostor.kill(), impostor.wait()))
        con = sqlite3.connect(self.db)
        con.execute("update sessions set status = 'backing_up', ended_at = 0, pid = ?, "
                    "started_at = started_at - 3600", (impostor.pid,))
        con.execute("update files set state = 'verifying'")
        con.execute("update copies set state = 'copying'")
        con.commit()
        con.close()

        self.start()
        self.wait_log(r"database checked: 1 session\(s\) of a stopped process marked "
                      r"interrupted; 1 file\(s\) and 1 copy record\(s\)")
        [s] = self.sessions()
        self.assertEqual(s["status"], "interrupted")
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        self.assertEqual(con.execute("select state, last_error from files").fetchall(),
                         [("new", "interrupted")])
        self.assertEqual(con.execute("select state from copies").fetchall(), [("pending",)])
        con.close()
        self.stop()

    def test_ignored_devices_and_sighup_reload(self):
        img, staging = self.make_card("LATER", {"DCIM/L.JPG": "photo"})
        blank = os.path.join(self.dir, "blank.img")
        with open(blank, "wb") as f:
            f.truncate(8 << 20)
        loops = self.reserve(2)
        self.service_config(ignore=("loop*",))
        self.start()
        card_dev = self.attach(img, loops[0])
        # ignored; the rescan after the reload finds it
        self.assertEqual(self.sessions(), [])
        self.service_config()
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log("configuration reloaded")
        self.wait_log(r"session \d+ completed.*safe to remove")
        self.assertNotIn(f"({card_dev}", self.log().split("configuration reloaded")[0])
        # a device without a filesystem is not a card
        blank_dev = self.attach(blank, loops[1])
        self.wait_log(re.escape(f"'{blank_dev}': no filesystem"))
        [s] = self.sessions()
        self.assertEqual(s["label"], "LATER")
        self.assert_backed_up(staging)
        # a broken configuration is refused and the service keeps running
        with open(self.config, "a") as f:
            f.write("bogus: [\n")
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log("keeping the running one")
        self.stop()


    def test_home_assistant_and_dashboard_follow_the_service(self):
        from broker import Broker, Subscriber
        import json
        import urllib.request
        img, staging = self.make_card("EOS_R5", {"DCIM/100EOSR5/IMG_0001.JPG": "photo",
                                                 "DCIM/100EOSR5/MVI_0002.MP4": 2 << 20})
        [loop] = self.reserve()
        broker = Broker(self.dir)
        self.cleanups.append(broker.stop)
        sub = Subscriber(broker)
        self.cleanups.append(sub.stop)
        self.service_config(unmount=False)
        with open(self.config) as f:
            port = int(re.search(r"web_ui_port: (\d+)", f.read()).group(1))
        with open(self.config, "a") as f:
            f.write(f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {broker.port}\n")
        self.start()
        sub.wait(lambda: any(m[1].endswith("/availability") and m[2] == "online"
                             for m in sub.messages), 30, "online")
        self.attach(img, loop)
        self.wait_log(r"session \d+ completed")

        def states():
            return [json.loads(m[2]) for m in sub.messages if m[1].endswith("/state")]
        sub.wait(lambda: states() and states()[-1]["status"] == "completed", 30, "completed")
        last = states()[-1]
        self.assertEqual(last["last_result"], "completed")
        self.assertEqual(last["files_copied"], 2)
        seq = [s["status"] for s in states()]
        self.assertEqual(seq[0], "idle")
        self.assertIn("scanning", seq)
        discovery = json.loads([m for m in sub.messages
                                if m[1].startswith("homeassistant/device/")][-1][2])
        self.assertEqual(discovery["device"]["configuration_url"], f"http://127.0.0.1:{port}/")
        # one "Backup finished" event, not retained; Home Assistant's birth makes the service
        # publish discovery and state again, never the event
        device_id = discovery["device"]["identifiers"][0]
        event_topic = f"snapsync/{device_id}/event"
        sub.wait(lambda: sub.find(event_topic), 30, "the session's event")
        [event] = [json.loads(m[2]) for m in sub.find(event_topic)]
        self.assertEqual((event["event_type"], event["card"], event["files_copied"],
                          event["safe_to_remove"], event["dashboard_url"]),
                         ("completed", "EOS_R5", 2, False, f"http://127.0.0.1:{port}/"))
        verification = f"snapsync/{device_id}/verification"
        n = len(sub.find(verification))
        broker.publish("homeassistant/status", "online")
        # published after discovery and state: the whole answer to the birth is in
        sub.wait(lambda: len(sub.find(verification)) > n, 30,
                 "the verification state again after Home Assistant's birth")
        self.assertEqual(len(sub.find(event_topic)), 1)
        late = Subscriber(broker)
        self.cleanups.append(late.stop)
        self.assertEqual(late.find(event_topic), [])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as r:
            self.assertEqual(r.status, 200)
            json.loads(r.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sessions", timeout=10) as r:
            self.assertEqual(json.loads(r.read())[0]["status"], "completed")

        # the card stayed mounted (unmount_when_done false): Home Assistant's eject button
        self.assertEqual(len(self.our_mounts()), 1)
        device_id = discovery["device"]["identifiers"][0]
        broker.publish(f"snapsync/{device_id}/cmd/eject", "bogus")  # ignored, logged
        broker.publish(f"snapsync/{device_id}/cmd/eject", "PRESS")
        self.wait_log(r"ejected: safe to remove")
        self.assertEqual(self.our_mounts(), {})
        self.assertIn("ignored unexpected message", self.log())
        self.stop()
        sub.wait(lambda: [m[2] for m in sub.messages if m[1].endswith("/availability")][-1]
                 == "offline", 30, "offline after stop")


    def test_a_session_that_ends_while_the_broker_is_unreachable_fires_its_event_once(self):
        """The "Backup finished" event of a session that ended while the service could not reach
        the broker is published when it reconnects, once: not again on the next reconnect."""
        from broker import Broker, CutProxy, Subscriber
        import json
        img, staging = self.make_card("EOS_R8", {"DCIM/IMG_0001.JPG": "photo"})
        [loop] = self.reserve()
        broker = Broker(self.dir)
        self.cleanups.append(broker.stop)
        proxy = CutProxy(broker)  # the service's way to the broker
        self.cleanups.append(proxy.stop)
        sub = Subscriber(broker)  # Home Assistant's, never cut
        self.cleanups.append(sub.stop)
        self.service_config()
        with open(self.config, "a") as f:
            f.write(f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {proxy.port}\n")
        self.start()

        def discoveries():
            return [m for m in sub.messages if m[1].startswith("homeassistant/device/")]
        sub.wait(lambda: discoveries(), 30, "discovery")
        device_id = json.loads(discoveries()[-1][2])["device"]["identifiers"][0]
        event_topic = f"snapsync/{device_id}/event"
        proxy.cut()
        self.wait_log("mqtt: lost the connection")
        self.attach(img, loop)
        self.wait_log(r"session \d+ completed")
        self.assertEqual(sub.find(event_topic), [])
        n = len(discoveries())
        proxy.restore()
        sub.wait(lambda: sub.find(event_topic), 90, "the event after the reconnect")
        [event] = [json.loads(m[2]) for m in sub.find(event_topic)]
        self.assertEqual((event["event_type"], event["card"], event["files_copied"],
                          event["safe_to_remove"]), ("completed", "EOS_R8", 1, True))
        self.assertGreater(len(discoveries()), n)  # it came with the reconnect
        # the broker acknowledged the event (QoS 1) before it passed on this birth message, on
        # the same connection: once the service answers the birth, it knows the event arrived;
        # a connection lost before that acknowledgement would repeat the event, as MQTT says
        n = len(discoveries())
        broker.publish("homeassistant/status", "online")
        sub.wait(lambda: len(discoveries()) > n, 30, "discovery again after the birth")
        # another loss of the broker: the reconnect publishes discovery and state, not the event
        proxy.cut()
        self.wait_log("mqtt: lost the connection", count=2)
        verification = f"snapsync/{device_id}/verification"
        n = len(sub.find(verification))
        proxy.restore()
        sub.wait(lambda: len(sub.find(verification)) > n, 90,
                 "the verification state after the second reconnect, published after events")
        self.assertEqual(len(sub.find(event_topic)), 1)
        self.stop()


    def test_retry_button_backs_up_the_failed_files_of_a_card_still_in(self):
        from broker import Broker, Subscriber
        import json
        img, staging = self.make_card("RETRY", {"DCIM/IMG_0001.JPG": "photo",
                                                "DCIM/CLIP.MP4": 1 << 20})
        [loop] = self.reserve()
        broker = Broker(self.dir)
        self.cleanups.append(broker.stop)
        sub = Subscriber(broker)
        self.cleanups.append(sub.stop)
        self.service_config(backup="  concurrent_files: 1\n  max_retries: 0\n")
        with open(self.config, "a") as f:
            f.write(f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {broker.port}\n")
        # a file where the photo's date folder should be: the photo fails, the clip does not
        os.makedirs(f"{self.dest}/2024/08")
        with open(f"{self.dest}/2024/08/09", "w") as f:
            f.write("in the way")
        self.start()
        self.attach(img, loop)
        self.wait_log(r"session \d+ partial")
        self.assertEqual(len(self.our_mounts()), 1)  # not complete: the card stays mounted
        sub.wait(lambda: any(m[1].startswith("homeassistant/device/") for m in sub.messages), 30,
                 "discovery")
        device_id = json.loads([m for m in sub.messages
                                if m[1].startswith("homeassistant/device/")][-1][2])[
            "device"]["identifiers"][0]
        os.remove(f"{self.dest}/2024/08/09")
        broker.publish(f"snapsync/{device_id}/cmd/retry", "PRESS")
        self.wait_log(r"retry: 1 failed file\(s\) marked")
        self.wait_log(r"session \d+ completed.*safe to remove")
        self.assert_backed_up(staging)
        self.assertEqual([s["status"] for s in self.sessions()], ["partial", "completed"])
        self.stop()


    def test_mqtt_broker_late_then_mqtt_turned_off(self):
        from broker import Broker, Subscriber
        broker = Broker(self.dir)
        self.cleanups.append(broker.stop)
        broker.halt()  # down when the service starts
        self.service_config()
        with open(self.config, "a") as f:
            f.write(f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {broker.port}\n")
        self.start()
        broker.launch()  # the broker comes up: the service finds it by itself
        sub = Subscriber(broker)
        self.cleanups.append(sub.stop)
        sub.wait(lambda: any(m[1].startswith("homeassistant/device/") and m[2]
                             for m in sub.messages), 90, "discovery once the broker is up")
        sub.wait(lambda: any(m[1].endswith("/state") for m in sub.messages), 30, "idle state")
        # MQTT turned off: the device is removed from Home Assistant (empty retained config)
        with open(self.config) as f:
            text = f.read().replace("mqtt:\n  enabled: true", "mqtt:\n  enabled: false")
        with open(self.config, "w") as f:
            f.write(text)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log("removed from Home Assistant")
        sub.wait(lambda: any(m[1].startswith("homeassistant/device/") and m[2] == ""
                             for m in sub.messages), 30, "the empty retained discovery")
        late = Subscriber(broker)
        self.cleanups.append(late.stop)
        self.assertEqual([m for m in late.messages if m[1].startswith("homeassistant/")], [])
        self.stop()


class PackagingTest(SnapsyncTest):
    def test_install_sh_is_idempotent_and_uninstall_keeps_data(self):
        top = os.environ.get("SNAPSYNC_SOURCE_DIR", "../..")
        root = os.path.join(self.dir, "root")
        env = dict(self.env, SNAPSYNC_ROOT=root,
                   SNAPSYNC_BUILD_DIR=os.path.join(os.path.dirname(self.dir), "install-build"))
        run = lambda *a: subprocess.run(["sh", os.path.join(top, "install.sh"), *a], env=env,
                                        capture_output=True, text=True, timeout=600)
        p = run()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("systemd is not running", p.stdout)
        etc = os.path.join(root, "etc/snapsync")
        binary = os.path.join(root, "usr/local/bin/snapsync")
        self.assertTrue(os.access(binary, os.X_OK))
        self.assertEqual(os.stat(f"{etc}/.env").st_mode & 0o777, 0o600)
        with open(f"{etc}/config.yaml") as f:
            config = f.read()
        self.assertIn("database_path: /var/lib/snapsync/snapsync.db", config)
        self.assertIn("mount_point: /var/lib/snapsync/backup", config)
        self.assertTrue(os.path.exists(os.path.join(root, "etc/systemd/system/snapsync.service")))
        # CMake's install(): man pages, bash completion, docs, the .env template
        extras = [os.path.join(root, "usr/local/share", f) for f in (
            "man/man1/snapsync.1", "man/man5/snapsync.yaml.5",
            "bash-completion/completions/snapsync", "doc/snapsync/README.md",
            "snapsync/env.example")]
        for f in extras:
            self.assertTrue(os.path.isfile(f), f)
        # the installed configuration is valid
        self.snapsync("--config", f"{etc}/config.yaml", "config", config=False, check=0)
        # a second run keeps what the user changed
        with open(f"{etc}/config.yaml", "a") as f:
            f.write("# mine\n")
        with open(f"{etc}/.env", "w") as f:
            f.write("IMMICH_API_KEY=secret\n")
        p = run()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("kept the existing", p.stdout)
        with open(f"{etc}/config.yaml") as f:
            self.assertTrue(f.read().endswith("# mine\n"))
        with open(f"{etc}/.env") as f:
            self.assertEqual(f.read(), "IMMICH_API_KEY=secret\n")
        p = run("--uninstall")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertFalse(os.path.exists(binary))
        self.assertFalse(os.path.exists(os.path.join(root, "etc/systemd/system/snapsync.service")))
        for f in extras:
            self.assertFalse(os.path.exists(f), f)
        self.assertTrue(os.path.exists(f"{etc}/config.yaml"))
        self.assertTrue(os.path.isdir(os.path.join(root, "var/lib/snapsync")))


    def test_systemd_unit_verifies(self):
        src = os.path.join(os.environ.get("SNAPSYNC_SOURCE_DIR", "../.."), "packaging",
                           "snapsync.service")
        with open(src) as f:
            unit = f.read()
        self.assertIn("Type=notify", unit)
        self.assertIn("WatchdogSec=", unit)
        # verify needs the binary it names: point it at the one under test
        unit = unit.replace("/usr/local/bin/snapsync", os.path.abspath(BIN))
        path = os.path.join(self.dir, "snapsync.service")
        with open(path, "w") as f:
            f.write(unit)
        p = subprocess.run([tool("systemd-analyze"), "verify", path], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn("snapsync.service:", p.stderr, p.stderr)
