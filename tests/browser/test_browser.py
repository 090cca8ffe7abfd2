"""The dashboard in a real browser: Debian's Chromium driven by playwright-core (pinned in
package-lock.json, installed with `npm ci` into the build folder; no browser is downloaded),
against `snapsync web` reading a database written by real `snapsync backup` runs.

Screenshots at phone and desktop width go to $SNAPSYNC_BROWSER_ARTIFACTS."""

import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from harness import SnapsyncTest, make_blob, make_path_beyond_ceiling, make_photo, tool, \
    write_config  # noqa: E402
from webserver import WebServer  # noqa: E402

NODE_DIR = os.environ.get("SNAPSYNC_BROWSER_NODE_DIR",
                          os.path.join(os.environ.get("SNAPSYNC_TEST_TMP", "/tmp"), "browser-node"))
ARTIFACTS = os.environ.get("SNAPSYNC_BROWSER_ARTIFACTS",
                           os.path.join(os.environ.get("SNAPSYNC_TEST_TMP", "/tmp"),
                                        "browser-artifacts"))
CHROMIUM = "/usr/bin/chromium"
DEBIAN_NODE_MAJOR = 18  # Debian 12's nodejs (18.20)


def install_driver():
    """npm ci of the pinned playwright-core into NODE_DIR, once per lock file."""
    os.makedirs(NODE_DIR, exist_ok=True)
    for f in ("package.json", "package-lock.json", "driver.js"):
        shutil.copyfile(os.path.join(HERE, f), os.path.join(NODE_DIR, f))
    with open(os.path.join(HERE, "package-lock.json")) as f:
        pinned = json.load(f)["packages"]["node_modules/playwright-core"]
    want = pinned["version"]
    # Debian 12's and Raspberry Pi OS's nodejs is 18: a playwright-core that needs more refuses to
    # start there, even where this machine's newer Node hides it
    engines = pinned.get("engines", {}).get("node", "")
    if not engines.startswith(">=") or int(engines[2:].split(".")[0]) > DEBIAN_NODE_MAJOR:
        raise AssertionError(f"playwright-core {want} needs Node {engines}; Debian 12 has "
                             f"{DEBIAN_NODE_MAJOR}: pin a version whose engines allow it")
    have = os.path.join(NODE_DIR, "node_modules", "playwright-core", "package.json")
    if os.path.exists(have):
        with open(have) as f:
            if json.load(f)["version"] == want:
                return
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    p = subprocess.run([tool("npm"), "ci", "--engine-strict", "--no-audit", "--no-fund",
                        "--ignore-scripts"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"npm ci failed:\n{p.stdout}\n{p.stderr}")


class Browser:
    """driver.js in node: one JSON command per line, one answer per line."""

    def __init__(self, logdir):
        if not os.access(CHROMIUM, os.X_OK):
            raise AssertionError(f"{CHROMIUM} is missing (scripts/deps.sh --test installs it)")
        self.log = open(os.path.join(logdir, "browser-driver.log"), "w")
        self.proc = subprocess.Popen([tool("node"), os.path.join(NODE_DIR, "driver.js")],
                                     cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)

    def call(self, cmd, timeout=60, **kw):
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"the browser driver did not answer {cmd} within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the browser driver died during {cmd}")
        r = json.loads(line)
        if not r["ok"]:
            raise AssertionError(f"{cmd} {kw}: {r['error']}")
        return r["value"]

    def close(self):
        try:
            if self.proc.poll() is None:
                self.call("close", timeout=30)
        except AssertionError:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.log.close()


class DashboardTest(SnapsyncTest):
    @classmethod
    def setUpClass(cls):
        install_driver()
        os.makedirs(ARTIFACTS, exist_ok=True)

    def shot(self, b, name, width, height, full=True):
        b.call("viewport", width=width, height=height)
        path = os.path.join(ARTIFACTS, f"{name}.png")
        b.call("screenshot", path=path, fullPage=full)
        self.assertGreater(os.path.getsize(path), 5000)

    def test_dashboard(self):
        # a finished session with one failed file: its date folder is taken by a file
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2023:07:16 09:00:00")
        os.makedirs(f"{self.dest}/2023/07")
        with open(f"{self.dest}/2023/07/16", "w") as f:
            f.write("in the way")
        write_config(self.config, self.dest, self.db,
                     backup="  concurrent_files: 1\n  max_retries: 0\n")
        first = self.backup(None, 1)
        self.assertEqual(first["files_failed"], 1)

        # a second card, big enough to catch mid-backup
        card2 = os.path.join(self.dir, "EOS_R6")
        for i in range(12):
            make_blob(f"{card2}/DCIM/100EOSR6/CLIP{i:02d}.MP4", 16 << 20)

        web = WebServer(self)
        b = Browser(self.dir)
        p = None
        try:
            b.call("launch", width=1280, height=900)
            self.assertEqual(b.call("goto", url=web.url + "/"), 200)
            b.call("wait_text", selector="#state", pattern="^Idle$")
            b.call("wait_text", selector="#banner", pattern="partial")
            b.call("wait_text", selector="#sessions", pattern="card")
            self.assertEqual(b.call("count", selector="#failed li"), 1)
            b.call("wait_text", selector="#health", pattern="reachable")

            p = self.start_held_backup(card2)
            b.call("wait_text", selector="#state", pattern="^Backing up$")
            b.call("wait_text", selector=".cardrun h3", pattern="EOS_R6")
            b.call("wait_text", selector=".cardrun .current", pattern="CLIP")
            text = b.call("wait_text", selector=".cardrun .figures", pattern=r"\d+ / 12")
            done = int(text.split("Files", 1)[1].split("/", 1)[0])

            # one more file, held again: the page follows without a reload
            self.let_one_more_file_finish(p)
            b.call("wait_text", selector=".cardrun .figures",
                   pattern=r"Files(%s) / 12" % "|".join(str(n) for n in range(done + 1, 13)))
            self.assertEqual(b.call("text", selector="#conn"), "Live")
            self.shot(b, "desktop-running", 1280, 900)
            self.shot(b, "phone-running", 390, 844)

            p.send_signal(signal.SIGCONT)
            self.assertEqual(p.wait(timeout=180), 0)
            p = None
            b.call("viewport", width=1280, height=900)
            b.call("wait_text", selector="#state", pattern="^Idle$")
            b.call("wait_text", selector="#banner", pattern="EOS_R6 complete")
            b.call("wait_text", selector="#sessions", pattern="EOS_R6")

            # history: the first session expands to its files
            b.call("click", selector=f'#sessions details[data-session="{first["session_id"]}"] '
                                     "summary")
            b.call("wait_text", selector=f'#sessions details[data-session="{first["session_id"]}"]'
                                         " table", pattern="IMG_0001.JPG")
            self.shot(b, "desktop-idle", 1280, 900)

            # retry: the failed file leaves the list, the database has it pending again
            b.call("click", selector="#failed li button")
            b.call("wait_text", selector="#message", pattern="copied again")
            b.call("wait_gone", selector="#failed li")
            con = sqlite3.connect(self.db)
            self.assertEqual(con.execute("select count(*) from copies where state='pending'")
                             .fetchone()[0], 1)
            con.close()

            # a card with a path past the ceiling: partial, the entry named in the banner; then
            # a card without photos: its own banner
            card3 = os.path.join(self.dir, "DEEP")
            make_blob(f"{card3}/DCIM/IMG_TOP.JPG", 4000)
            name = make_path_beyond_ceiling(card3)
            self.assertEqual(self.backup(card3, 1)["status"], "partial")
            b.call("wait_text", selector="#banner", pattern="1 entry of the card could not be read")
            b.call("wait_text", selector="#banner .scan-problems .path", pattern=name[:40])
            empty = os.path.join(self.dir, "NOPHOTOS")
            make_blob(f"{empty}/MISC/notes.txt", 100)
            self.assertEqual(self.backup(empty)["status"], "empty")
            b.call("wait_text", selector="#banner", pattern="No photos or videos on NOPHOTOS")
            b.call("wait_text", selector="#sessions", pattern="empty")

            # keyboard: after a reload, the first Tab reaches the skip link
            self.assertEqual(b.call("goto", url=web.url + "/"), 200)
            b.call("wait_text", selector="#state", pattern="^Idle$")
            b.call("press", key="Tab")
            self.assertIn("Skip to content", b.call("focused"))

            self.shot(b, "phone-idle", 390, 844)
            b.call("scheme", dark=True)
            self.shot(b, "phone-dark", 390, 844)
            self.shot(b, "desktop-dark", 1280, 900)
            self.assertEqual(b.call("problems"), [])
        finally:
            if p is not None:
                p.send_signal(signal.SIGCONT)
                p.wait(timeout=180)
            b.close()
            self.assertEqual(web.stop(), 0)


if __name__ == "__main__":
    unittest.main()
