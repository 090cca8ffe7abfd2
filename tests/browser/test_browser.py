# SPDX-License-Identifier: MIT
"""The dashboard in a real browser: Debian's Chromium driven by playwright-core (pinned in
package-lock.json, installed with `npm ci` into the build folder; no browser is downloaded),
against `snapsync web` reading a database written by real `snapsync backup` runs.

Screenshots at phone and desktop width go to $SNAPSYNC_BROWSER_ARTIFACTS."""

import http.client
import http.server
import json
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from harness import SnapsyncTest, free_port, make_blob, make_path_beyond_ceiling, make_photo, \
    tool, write_config  # noqa: E402
from test_notify import HookServer  # noqa: E402  (only the class: its tests do not run here)
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


# At a phone's size, everything the page shows fits the screen: the page does not scroll sideways,
# nothing but the session tables' scrolling boxes is wider than the screen, long words wrap.
FITS = r"""(() => {
  const out = [], w = window.innerWidth, d = document.documentElement;
  if (d.scrollWidth > w) out.push('page scrolls sideways: ' + d.scrollWidth + ' > ' + w);
  for (const e of document.querySelectorAll('body *')) {
    if (e.closest('.files') && !e.matches('.files')) continue;
    const r = e.getBoundingClientRect();
    if (r.width && (r.right > w + 0.5 || r.left < -0.5) && !e.matches('.skip'))
      out.push(e.tagName + '.' + e.className + ' spans ' + r.left + '..' + r.right);
  }
  const b = document.getElementById('banner');
  if (getComputedStyle(b).overflowWrap !== 'anywhere') out.push('banner does not wrap');
  if (b.scrollWidth > b.clientWidth) out.push('banner text overflows its box');
  for (const f of document.querySelectorAll('.files')) {
    const t = f.querySelector('table');
    if (t && t.getBoundingClientRect().width > f.clientWidth + 0.5 &&
        !['auto', 'scroll'].includes(getComputedStyle(f).overflowX))
      out.push('a session table is cut off');
  }
  return out;
})()"""


class SubpathProxy:
    """A reverse proxy serving the dashboard under /prefix/, as Home Assistant's ingress does:
    only /prefix/... is forwarded (the prefix removed); anything else is a 404 it remembers.
    Server-sent events are passed on as they come."""

    PREFIX = "/prefix"

    def __init__(self, backend_port):
        self.stray = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.forward()

            def do_POST(self):
                self.forward()

            def forward(self):
                if not self.path.startswith(proxy.PREFIX + "/"):
                    proxy.stray.append(self.path)
                    self.send_error(404)
                    return
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                c = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=60)
                try:
                    c.request(self.command, self.path[len(proxy.PREFIX):], body=body,
                              headers=headers)
                    r = c.getresponse()
                    stream = r.getheader("Content-Type", "").startswith("text/event-stream")
                    data = b"" if stream else r.read()
                    self.send_response(r.status)
                    for k, v in r.getheaders():
                        if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                            self.send_header(k, v)
                    if not stream:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if not stream:
                        self.wfile.write(data)
                        return
                    while True:
                        chunk = r.read1(65536)
                        if not chunk:
                            return
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (OSError, http.client.HTTPException):
                    pass  # the browser or the server went away: so does the stream
                finally:
                    c.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.PREFIX}/"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)


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
            # while the lists load, the page says so, not that there is nothing
            b.call("hold", pattern=r"/api/(sessions|files)\?")
            self.assertEqual(b.call("goto", url=web.url + "/"), 200)
            b.call("wait_text", selector="#state", pattern="^Idle$")
            for empty in ("#sessions-empty", "#failed-empty"):
                self.assertEqual(b.call("text", selector=empty), "Loading…")
            self.assertGreater(b.call("release"), 0)
            b.call("wait_text", selector="#banner", pattern="partial: 1 file failed")
            b.call("wait_text", selector="#sessions", pattern="card")
            b.call("wait_text", selector="#failed li .sub", pattern=r"· 1 attempt$")
            self.assertEqual(b.call("count", selector="#failed li"), 1)
            b.call("wait_text", selector="#health", pattern="reachable")

            # on a phone: the failed-file banner and an expanded session fit the screen, the
            # copies say which destination is which
            b.call("viewport", width=390, height=844)
            first_row = f'#sessions details[data-session="{first["session_id"]}"]'
            b.call("click", selector=first_row + " summary")
            b.call("wait_text", selector=first_row + " table", pattern="IMG_0001.JPG")
            label = web.get_json("/api/health")["destinations"][0]["label"]
            copies = b.call("evaluate", expression=f"[...document.querySelectorAll("
                            f"'{first_row} td.copies')].map((e) => e.textContent)")
            self.assertIn(f"{label}: completed", copies)
            self.assertIn(f"{label}: failed", copies)
            report = b.call("evaluate", expression=f"document.querySelector("
                            f"'{first_row} .report a').href")
            self.assertEqual(report, f"{web.url}/api/sessions/{first['session_id']}/report"
                             "?format=html")
            self.assertEqual(b.call("evaluate", expression=FITS), [])
            self.shot(b, "phone-failed", 390, 844)
            b.call("viewport", width=1280, height=900)

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

            # history: the first session, expanded before, stays so
            b.call("wait_text", selector=first_row + " table", pattern="IMG_0001.JPG")
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
            b.call("wait_text", selector="#sessions", pattern=r"· 1 file, 1 copied")
            empty = os.path.join(self.dir, "NOPHOTOS")
            make_blob(f"{empty}/MISC/notes.txt", 100)
            self.assertEqual(self.backup(empty)["status"], "empty")
            b.call("wait_text", selector="#banner", pattern="No photos or videos on NOPHOTOS")
            b.call("wait_text", selector="#sessions", pattern="empty")

            # the session's printable report, linked from its row: its inline style is allowed
            # (a blocked one would be one of the page's problems), nothing else is loaded
            self.assertEqual(b.call("open_tab", url=report), 200)
            b.call("wait_text", selector="h1", pattern=f"session {first['session_id']}$")
            b.call("wait_text", selector="table.files", pattern="IMG_0002.JPG")
            self.assertEqual(b.call("evaluate", expression="getComputedStyle(document."
                                    "querySelector('table.files th')).backgroundColor"),
                             "rgb(238, 238, 238)")
            self.shot(b, "report", 794, 1123)  # A4 at 96 dpi
            b.call("close_tab")

            # keyboard: after a reload, the first Tab reaches the skip link
            self.assertEqual(b.call("goto", url=web.url + "/"), 200)
            b.call("wait_text", selector="#state", pattern="^Idle$")
            b.call("press", key="Tab")
            self.assertIn("Skip to content", b.call("focused"))

            self.shot(b, "phone-idle", 390, 844)
            self.assertEqual(b.call("evaluate", expression=FITS), [])
            b.call("scheme", dark=True)
            self.shot(b, "phone-dark", 390, 844)
            self.assertEqual(b.call("evaluate", expression=FITS), [])
            self.shot(b, "desktop-dark", 1280, 900)
            self.assertEqual(b.call("problems"), [])
        finally:
            if p is not None:
                p.send_signal(signal.SIGCONT)
                p.wait(timeout=180)
            b.close()
            self.assertEqual(web.stop(), 0)

    def test_failed_notification_deliveries(self):
        """A webhook that refuses the notification (its answer a piece of markup) and one that
        is down: the dashboard lists the failed delivery with its channel, time and error, as
        text, and how many wait; nothing when there is nothing to say."""
        hostile = '<img src=x onerror="window.pwned=1"><b>bold</b> & "quoted"'
        refusing = HookServer(self)
        self.cleanups.append(refusing.stop)
        refusing.httpd.reply = (400, json.dumps({"message": hostile}).encode())
        refused_url = refusing.url + "/hook"
        down_url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there

        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        write_config(self.config, self.dest, self.db)
        self.assertEqual(self.backup()["status"], "completed")
        web = WebServer(self)
        b = Browser(self.dir)
        try:
            b.call("launch", width=1280, height=900)
            self.assertEqual(b.call("goto", url=web.url + "/"), 200)
            b.call("wait_text", selector="#banner", pattern="complete")
            self.assertTrue(b.call("evaluate", expression="document.getElementById('notify')"
                                   ".closest('section').hidden"))

            write_config(self.config, self.dest, self.db,
                         extra=f"notify:\n  webhooks:\n    - {{url: \"{refused_url}\"}}\n"
                               f"    - {{url: \"{down_url}\"}}\n")
            card2 = os.path.join(self.dir, "EOS_R6")
            make_photo(f"{card2}/DCIM/IMG_0002.JPG", self.dir, "2023:07:16 09:00:00")
            self.assertEqual(self.backup(card2)["status"], "completed")
            # the page follows the status document, which the server samples
            b.call("wait_text", selector="#notify-summary", pattern="1 notification waiting")
            notes = web.get_json("/api/status")["notifications"]
            self.assertEqual(notes["pending"], 1, notes)
            [failed] = notes["failed"]
            self.assertIn(hostile, failed["error"])
            self.assertFalse(b.call("evaluate", expression="document.getElementById('notify')"
                                    ".closest('section').hidden"))
            self.assertEqual(b.call("count", selector="#notify li"), 1)
            self.assertEqual(b.call("text", selector="#notify li .channel"), failed["channel"])
            self.assertEqual(b.call("text", selector="#notify li .err"), failed["error"])
            self.assertIn("completed", b.call("text", selector="#notify li .sub"))
            self.assertIn("1 attempt", b.call("text", selector="#notify li .sub"))
            # markup in an error stays text: no element made from it, no script run
            self.assertEqual(b.call("count", selector="#notify img, #notify b"), 0)
            self.assertIsNone(b.call("evaluate", expression="window.pwned === undefined ? "
                                     "null : window.pwned"))
            for name, w, h, dark in (("desktop-notify", 1280, 900, False),
                                     ("phone-notify", 390, 844, False),
                                     ("phone-notify-dark", 390, 844, True),
                                     ("desktop-notify-dark", 1280, 900, True)):
                b.call("scheme", dark=dark)
                self.shot(b, name, w, h)
                self.assertEqual(b.call("evaluate", expression=FITS), [], name)
            # the error reads as an error in either scheme: its colour is not the text's
            colours = b.call("evaluate", expression="[getComputedStyle(document.querySelector("
                             "'#notify li .err')).color, getComputedStyle(document.body).color]")
            self.assertNotEqual(colours[0], colours[1])
            self.assertEqual(b.call("problems"), [])
        finally:
            b.close()
            self.assertEqual(web.stop(), 0)

    def test_verification_card(self):
        """Never verified: the card says how to verify. After `snapsync verify` found a copy
        missing, the card names it, as text: a file name is no markup."""
        name = "<img src=x onerror=alert(1)>.JPG"
        make_photo(f"{self.card}/DCIM/{name}", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2023:07:16 09:00:00")
        self.assertEqual(self.backup()["status"], "completed")
        web = WebServer(self)
        b = Browser(self.dir)
        try:
            b.call("launch", width=1280, height=900)
            self.assertEqual(b.call("goto", url=web.url + "/"), 200)
            text = b.call("wait_text", selector="#verify-summary", pattern="^Never verified")
            self.assertIn("snapsync verify", text)
            self.assertIn("backup.verify_interval_days", text)
            self.assertEqual(b.call("count", selector="#verify-problems li"), 0)

            copy = [p for p in self.dest_files() if p.endswith(name)]
            self.assertEqual(len(copy), 1, self.dest_files())
            os.unlink(os.path.join(self.dest, copy[0]))
            self.snapsync("verify", check=1)
            self.assertEqual(b.call("goto", url=web.url + "/"), 200)
            b.call("wait_text", selector="#verify-summary", pattern="1 copy with problems")
            self.assertIn("2 copies checked, 1 ok, 1 missing",
                          b.call("text", selector="#verify-summary"))
            self.assertEqual(b.call("text", selector="#verify-problems .path"), "DCIM/" + name)
            self.assertEqual(b.call("text", selector="#verify-problems .tag"), "missing")
            label = web.get_json("/api/health")["destinations"][0]["label"]
            b.call("wait_text", selector="#verify-problems .err", pattern="^" + re.escape(label))
            self.assertIn(os.path.join(self.dest, copy[0]),
                          b.call("text", selector="#verify-problems .err"))
            self.assertEqual(b.call("count", selector="#verify-problems img"), 0)
            self.shot(b, "desktop-verification", 1280, 900)
            self.shot(b, "phone-verification", 390, 844)
            self.assertEqual(b.call("evaluate", expression=FITS), [])
            self.assertEqual(b.call("problems"), [])
        finally:
            b.close()
            self.assertEqual(web.stop(), 0)

    def test_subpath(self):
        """Behind a reverse proxy under /prefix/ (Home Assistant's ingress) the page loads its
        script, its data and its live events, and installs from its manifest."""
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        write_config(self.config, self.dest, self.db)
        self.backup(None)
        web = WebServer(self)
        proxy = SubpathProxy(web.port)
        b = Browser(self.dir)
        try:
            b.call("launch", width=390, height=844)
            self.assertEqual(b.call("goto", url=proxy.url), 200)
            b.call("wait_text", selector="#state", pattern="^Idle$")
            b.call("wait_text", selector="#banner", pattern="complete")
            b.call("wait_text", selector="#sessions", pattern="card")
            b.call("wait_text", selector="#health", pattern="reachable")
            b.call("wait_text", selector="#conn", pattern="^Live$")
            manifest = b.call("evaluate", expression="""(async () => {
              const url = document.querySelector('link[rel=manifest]').href;
              const r = await fetch(url);
              const m = await r.json();
              const icons = await Promise.all(m.icons.map(async (i) => {
                const f = await fetch(new URL(i.src, url));
                return [new URL(i.src, url).pathname, f.status, f.headers.get('content-type')];
              }));
              return { url, type: r.headers.get('content-type'), start: new URL(m.start_url, url).href,
                       display: m.display, icons };
            })()""")
            self.assertEqual(manifest["url"], proxy.url + "manifest.webmanifest")
            self.assertEqual(manifest["type"], "application/manifest+json")
            self.assertEqual(manifest["start"], proxy.url)
            self.assertEqual(manifest["display"], "standalone")
            self.assertEqual(
                {p: (st, t) for p, st, t in manifest["icons"]},
                {"/prefix/icon.svg": (200, "image/svg+xml"),
                 "/prefix/icon-192.png": (200, "image/png"),
                 "/prefix/icon-512.png": (200, "image/png")})
            self.assertEqual(b.call("evaluate", expression=FITS), [])
            self.shot(b, "phone-subpath", 390, 844)
            self.assertEqual(proxy.stray, [], "the page asked for something outside /prefix/")
            self.assertEqual(b.call("problems"), [])
        finally:
            b.close()
            proxy.stop()
            self.assertEqual(web.stop(), 0)


if __name__ == "__main__":
    unittest.main()
