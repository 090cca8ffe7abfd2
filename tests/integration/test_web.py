# SPDX-License-Identifier: MIT
"""`snapsync web`: the JSON API over real HTTP on a free loopback port, reading a real database
written by real `snapsync backup` runs (one held mid-session with SIGSTOP), and hostile requests
that must get a 4xx or a closed connection while the server stays healthy."""

import json
import os
import signal
import socket
import sqlite3
import time

from harness import SnapsyncTest, make_blob, make_path_beyond_ceiling, make_photo, write_config
from webserver import WebServer

TOKEN = "correct-horse-battery-staple-42"


class WebTest(SnapsyncTest):
    def start_web(self, *args):
        w = WebServer(self, args)
        self.cleanups.append(lambda: self.assertEqual(w.stop(), 0))
        return w

    def make_card_with_a_failure(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        make_photo(f"{self.card}/DCIM/IMG_0003.JPG", self.dir, "2023:07:16 10:00:00")
        # a file where the folder of 2023-07-16 should be: that one file fails
        os.makedirs(f"{self.dest}/2023/07")
        with open(f"{self.dest}/2023/07/16", "w") as f:
            f.write("in the way")

    def test_empty_database_and_assets(self):
        w = self.start_web()
        st = w.get_json("/api/status")
        self.assertEqual(st["state"], "idle")
        self.assertEqual(st["database"], "missing")
        self.assertEqual(st["mode"], "web")
        self.assertEqual(st["active"], [])
        self.assertIsNone(st["last"])
        self.assertEqual(w.get_json("/api/sessions"), [])
        self.assertEqual(w.get_json("/api/files?status=failed"), [])
        self.assertEqual(w.get_json("/api/stats")["sessions"], 0)
        w.get_json("/api/sessions/1", status=404)
        st, body = w.action("/api/files/1/retry")
        self.assertEqual(st, 404, body)
        self.assertFalse(os.path.exists(self.db), "a retry must not create the database")
        st, body = w.action("/api/cards/eject")
        self.assertEqual(st, 503)
        self.assertIn("snapsync start", body["error"])
        health = w.get_json("/api/health")
        self.assertIn("destinations", health)

        types = {"/": "text/html; charset=utf-8", "/app.js": "text/javascript; charset=utf-8",
                 "/style.css": "text/css; charset=utf-8", "/favicon.svg": "image/svg+xml",
                 "/icon.svg": "image/svg+xml", "/icon-192.png": "image/png",
                 "/icon-512.png": "image/png",
                 "/manifest.webmanifest": "application/manifest+json"}
        for path, ctype in types.items():
            status, h, data = w.request("GET", path)
            self.assertEqual(status, 200, path)
            self.assertEqual(h["content-type"], ctype)
            self.assertEqual(h["x-content-type-options"], "nosniff")
            csp = h["content-security-policy"]
            self.assertIn("default-src 'none'", csp)
            self.assertIn("script-src 'self'", csp)
            self.assertNotIn("unsafe-inline", csp)
            # framed only under its own origin (Home Assistant ingress), by no other site
            self.assertIn("frame-ancestors 'self'", csp)
            self.assertEqual(h["x-frame-options"], "SAMEORIGIN")
            self.assertGreater(len(data), 10)
        _, _, page = w.request("GET", "/")
        page = page.decode()
        self.assertIn('<script src="app.js"', page)
        self.assertNotRegex(page, r'(src|href)="/', "a sub-path proxy needs relative URLs")
        self.assertEqual(page.count("<script"), 1, "no inline script")
        self.assertNotIn("style=", page)
        self.assertNotIn("http://", page.replace("http://www.w3.org", ""))  # no CDN

        # health is probed in the background: the destination shows up without blocking
        deadline = time.monotonic() + 30
        while not health.get("checked_at") and time.monotonic() < deadline:
            time.sleep(0.05)
            health = w.get_json("/api/health")
        self.assertEqual(len(health["destinations"]), 1)
        self.assertEqual(health["destinations"][0]["kind"], "local")
        self.assertFalse(health["mqtt"]["enabled"])

    def test_api_over_finished_sessions_and_retry(self):
        self.make_card_with_a_failure()
        r = self.backup(None, 1)
        self.assertEqual(r["files_failed"], 1)
        w = self.start_web()

        sessions = w.get_json("/api/sessions?limit=5")
        self.assertEqual(len(sessions), 1)
        s = sessions[0]
        self.assertEqual(s["id"], r["session_id"])
        self.assertEqual(s["status"], "partial")
        self.assertEqual(s["files_total"], 3)
        self.assertEqual(s["files_failed"], 1)
        self.assertFalse(s["running"])

        d = w.get_json(f"/api/sessions/{s['id']}?limit=2")
        self.assertEqual(d["files_page"], {"offset": 0, "limit": 2, "total": 3})
        self.assertEqual([f["path"] for f in d["files"]],
                         ["DCIM/IMG_0001.JPG", "DCIM/IMG_0002.JPG"])
        self.assertEqual(d["files"][0]["outcome"], "copied")
        self.assertEqual(d["files"][0]["copies"][0]["state"], "completed")
        self.assertEqual(len(d["destinations"]), 1)
        self.assertEqual(d["destinations"][0]["completed"], 2)
        self.assertEqual(d["destinations"][0]["failed"], 1)
        d2 = w.get_json(f"/api/sessions/{s['id']}?offset=2&limit=2")
        self.assertEqual([f["path"] for f in d2["files"]], ["DCIM/IMG_0003.JPG"])
        self.assertEqual(d2["files"][0]["outcome"], "failed")
        self.assertTrue(d2["files"][0]["copies"][0]["error"])

        stats = w.get_json("/api/stats")
        self.assertEqual(stats["sessions"], 1)
        self.assertEqual(stats["files_completed"], 2)
        self.assertEqual(stats["files_failed"], 1)
        self.assertEqual(stats["destinations"][0]["completed"], 2)

        failed = w.get_json("/api/files?status=failed")
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["path"], "DCIM/IMG_0003.JPG")
        self.assertTrue(failed[0]["error"])
        fid = failed[0]["id"]

        st = w.wait_status(lambda x: x["last"] is not None, what="the last session")
        self.assertEqual(st["last"]["status"], "partial")
        self.assertEqual(st["database"], "ok")

        # retry: the failed copy becomes pending, the file leaves the failed list
        status, body = w.action(f"/api/files/{fid}/retry")
        self.assertEqual((status, body["marked"]), (200, 1), body)
        self.assertEqual(w.get_json("/api/files?status=failed"), [])
        con = sqlite3.connect(self.db)
        self.assertEqual(con.execute("select state, error from copies where file_id = ?",
                                     (fid,)).fetchall(), [("pending", None)])
        self.assertEqual(con.execute("select state from files where id = ?", (fid,)).fetchone(),
                         ("new",))
        con.close()
        status, body = w.action(f"/api/files/{fid}/retry")
        self.assertEqual((status, body["marked"]), (200, 0))

        # the next backup copies it; a session retry of the old session has nothing left
        os.remove(f"{self.dest}/2023/07/16")
        r2 = self.backup()
        self.assertEqual(r2["files_copied"], 1)
        status, body = w.action(f"/api/sessions/{s['id']}/retry")
        self.assertEqual((status, body["marked"]), (200, 0))
        st = w.wait_status(lambda x: x["last"] and x["last"]["id"] == r2["session_id"],
                           what="the second session")
        self.assertEqual(st["last"]["status"], "completed")
        self.assertEqual(st["stats"]["files_completed"], 3)
        w.get_json("/api/sessions/999", status=404)
        status, _ = w.action("/api/sessions/999/retry")
        self.assertEqual(status, 404)

    def test_actions_without_token_need_a_name_of_ours(self):
        """DNS rebinding: a page on evil.example whose name resolves to us is same-origin with
        itself, so Origin matches Host; without a token, only our own names may act."""
        self.make_card_with_a_failure()
        self.backup(None, 1)
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace("service:\n", "service:\n  web_ui_hosts: [pi.example.lan]\n", 1))
        w = self.start_web()
        fid = w.get_json("/api/files?status=failed")[0]["id"]
        path = f"/api/files/{fid}/retry"
        for host in ("evil.example", f"evil.example:{w.port}", "127.0.0.1.evil.example",
                     "localhost.evil.example", "pi.example.lan.evil.example"):
            st, body = w.action(path, {"Host": host, "Origin": f"http://{host}"})
            self.assertEqual(st, 403, (host, body))
            self.assertIn("web_ui_hosts", body["error"])
        self.assertEqual(len(w.get_json("/api/files?status=failed")), 1, "nothing was retried")
        hostname = socket.gethostname().split(".")[0]
        for host in (f"127.0.0.1:{w.port}", f"localhost:{w.port}", "[::1]", "PI.example.lan.",
                     f"pi.example.lan:{w.port}", hostname, f"{hostname}.local:{w.port}"):
            st, body = w.action(path, {"Host": host, "Origin": f"http://{host}"})
            self.assertEqual(st, 200, (host, body))

    def test_session_retry_marks_every_failed_file(self):
        self.make_card_with_a_failure()
        make_photo(f"{self.card}/DCIM/IMG_0004.JPG", self.dir, "2023:07:16 11:00:00")
        r = self.backup(None, 1)
        self.assertEqual(r["files_failed"], 2)
        w = self.start_web()
        status, body = w.action(f"/api/sessions/{r['session_id']}/retry")
        self.assertEqual((status, body["marked"]), (200, 2), body)
        self.assertEqual(w.get_json("/api/files?status=failed"), [])

    def test_empty_and_unreadable_sessions(self):
        empty = os.path.join(self.dir, "empty")
        make_blob(f"{empty}/MISC/notes.txt", 100)
        e = self.backup(empty)
        self.assertEqual(e["status"], "empty")
        make_blob(f"{self.card}/DCIM/IMG_TOP.JPG", 4000)
        name = make_path_beyond_ceiling(self.card)
        p = self.backup(None, 1)
        self.assertEqual(p["status"], "partial")
        w = self.start_web()
        sessions = w.get_json("/api/sessions")
        self.assertEqual([(s["status"], s["scan_problems"]) for s in sessions],
                         [("partial", 1), ("empty", 0)])
        d = w.get_json(f"/api/sessions/{p['session_id']}")
        [entry] = d["scan_problem_entries"]
        self.assertTrue(entry["path"].startswith(name + "/"), entry["path"])
        self.assertIn("path too long", entry["error"])
        self.assertIn("path too long", d["error"])
        self.assertEqual(w.get_json(f"/api/sessions/{e['session_id']}")["scan_problem_entries"], [])
        st = w.wait_status(lambda x: x["last"] is not None, what="the last session")
        self.assertEqual(st["last"]["status"], "partial")
        self.assertEqual(st["last"]["scan_problems"], 1)
        self.assertEqual(st["last"]["scan_problem_entries"][0]["path"], entry["path"])

    def test_a_running_backup_shows_live(self):
        for i in range(12):
            make_blob(f"{self.card}/DCIM/CLIP{i:02d}.MP4", 16 << 20)
        write_config(self.config, self.dest, self.db,
                     backup="  concurrent_files: 1\n  max_retries: 0\n")
        w = self.start_web()
        p = self.start_held_backup()
        try:
            st = w.wait_status(lambda x: x["active"] and x["active"][0]["files_total"] == 12,
                               what="the running session")
            a = st["active"][0]
            self.assertEqual(st["state"], "backing_up")
            self.assertTrue(a["running"])
            self.assertEqual(a["bytes_total"], 12 * (16 << 20))
            self.assertTrue(a["current_file"].startswith("DCIM/CLIP"), a)
            self.assertIn("history", a)
            self.assertEqual(len(a["destinations"]) <= 1, True)
            done = a["files_done"]

            # the event stream carries the same document
            ev = self.first_event(w)
            self.assertEqual(ev["active"][0]["id"], a["id"])

            # let it run until the database shows one more file, hold it again, and the status
            # follows without anything but time passing
            self.let_one_more_file_finish(p, a["id"])
            st = w.wait_status(lambda x: x["active"] and x["active"][0]["files_done"] > done,
                               what="progress to advance")
            self.assertEqual(st["active"][0]["status"], "backing_up")
            self.assertGreater(st["active"][0]["bytes_done"], a["bytes_done"])
        finally:
            p.send_signal(signal.SIGCONT)
            self.assertEqual(p.wait(timeout=180), 0)
        st = w.wait_status(lambda x: not x["active"] and x["last"], what="the end")
        self.assertEqual(st["state"], "idle")
        self.assertEqual(st["last"]["status"], "completed")
        self.assertEqual(st["last"]["files_copied"], 12)

    def first_event(self, w):
        """The first state event of /api/events, read raw (HTTP/1.0: no chunked framing)."""
        s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
        try:
            s.sendall(b"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            buf = b""
            mark = b"event: state\ndata: "
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if mark in buf and b"\n\n" in buf.split(mark, 1)[1]:
                    break
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            head = buf.split(b"\r\n\r\n", 1)[0].decode().lower()
            self.assertIn("content-type: text/event-stream", head)
            return json.loads(buf.split(mark, 1)[1].split(b"\n", 1)[0])
        finally:
            s.close()


class HostileTest(SnapsyncTest):
    def setUp(self):
        super().setUp()
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace("service:\n", f"service:\n  web_ui_token: {TOKEN}\n", 1))
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.backup()
        self.web = WebServer(self)

    def tearDown(self):
        self.assertEqual(self.web.stop(), 0)
        super().tearDown()

    def raw(self, data, timeout=15):
        """Sends bytes on a fresh connection; returns what came back until the server closed."""
        s = socket.create_connection(("127.0.0.1", self.web.port), timeout=timeout)
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def status_of(self, reply):
        if not reply:
            return None
        return int(reply.split(b" ", 2)[1])

    def assert_healthy(self):
        self.assertTrue(self.web.alive())
        st = self.web.get_json("/api/status")
        self.assertIn(st["state"], ("idle", "backing_up"))

    def test_token_and_cross_site_rules(self):
        w = self.web
        fid = 1
        st, body = w.action(f"/api/files/{fid}/retry")
        self.assertEqual(st, 401)
        st, _ = w.action(f"/api/files/{fid}/retry", {"Authorization": "Bearer wrong"})
        self.assertEqual(st, 401)
        st, _ = w.action(f"/api/files/{fid}/retry", {"Authorization": "Bearer " + TOKEN[:-1]})
        self.assertEqual(st, 401)
        good = {"Authorization": "Bearer " + TOKEN}
        st, body = w.action(f"/api/files/{fid}/retry", good)
        self.assertEqual(st, 200, body)
        # cross-site: refused whatever the token
        for h in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                  {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
            st, body = w.action(f"/api/files/{fid}/retry", {**good, **h})
            self.assertEqual(st, 403, (h, body))
        st, _ = w.action(f"/api/files/{fid}/retry",
                         {**good, "Origin": f"http://127.0.0.1:{w.port}",
                          "Sec-Fetch-Site": "same-origin"})
        self.assertEqual(st, 200)
        # a form post (no JSON content type) is refused
        for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data",
                      "application/jsonx"):
            st, _ = w.action(f"/api/files/{fid}/retry", {**good, "Content-Type": ctype})
            self.assertEqual(st, 415, ctype)
        st, _, _ = w.request("POST", f"/api/files/{fid}/retry", headers=good)
        self.assertEqual(st, 415)
        # bad JSON bodies
        for body in (b"{", b"[1,2]", b"\"x\"", b"{}{}", b"{\"a\":" + b"[" * 50 + b"]" * 50 + b"}",
                     b"\xff\xfe"):
            st, _ = w.action(f"/api/files/{fid}/retry", good, body=body)
            self.assertEqual(st, 400, body)
        # reads need no token, and no response carries the token
        for path in ("/api/status", "/api/health", "/api/stats", "/api/sessions",
                     "/api/sessions/1", "/api/files?status=failed", "/", "/app.js"):
            st, _, data = w.request("GET", path)
            self.assertEqual(st, 200, path)
            self.assertNotIn(TOKEN.encode(), data, path)
        self.assertTrue(w.get_json("/api/status")["token_required"])
        self.assert_healthy()

    def test_hostile_requests(self):
        w = self.web
        good = {"Authorization": "Bearer " + TOKEN}
        # no path leaves the table of assets and routes
        for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/app.js/../../etc/passwd",
                     "/api/../index.html", "/style.css%00.js", "/web/app.js", "/index.html/",
                     "//etc/passwd", "/api/sessions/../stats", "/api/status/x"):
            st, h, data = w.request("GET", path)
            self.assertEqual(st, 404, path)
            self.assertNotIn(b"root:", data)
        # malformed ids and numbers
        for path in ("/api/sessions/abc", "/api/sessions/-1", "/api/sessions/0",
                     "/api/sessions/99999999999999999999", "/api/sessions/1e3",
                     "/api/sessions/%31"):
            st, _, _ = w.request("GET", path)
            self.assertIn(st, (404,) if path != "/api/sessions/%31" else (200, 404), path)
        for path in ("/api/sessions?limit=0", "/api/sessions?limit=abc",
                     "/api/sessions?limit=100000", "/api/sessions/1?offset=-1",
                     "/api/files?status=completed", "/api/files", "/api/files?status=failed&limit=x"):
            st, _, _ = w.request("GET", path)
            self.assertEqual(st, 400, path)
        # methods
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
            st, h, _ = w.request(method, "/api/status")
            self.assertEqual(st, 405, method)
            self.assertIn("GET", h.get("allow", ""))
        st, h, _ = w.request("GET", "/api/files/1/retry")
        self.assertEqual(st, 405)
        self.assertEqual(h.get("allow"), "POST")
        st, _, _ = w.request("POST", "/api/status", body=b"{}",
                             headers={"Content-Type": "application/json"})
        self.assertEqual(st, 405)
        # a huge body is refused before it is read; a small but too big one too
        reply = self.raw(b"POST /api/files/1/retry HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nAuthorization: Bearer " +
                         TOKEN.encode() + b"\r\nContent-Length: 100000000\r\n\r\n{" + b" " * 4096)
        self.assertIn(self.status_of(reply), (413, None))
        st, _ = w.action("/api/files/1/retry", good, body=b"{" + b" " * 2000 + b"}")
        self.assertEqual(st, 413)
        # huge headers and a huge URL
        reply = self.raw(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 +
                         b"\r\n\r\n")
        self.assertIn(self.status_of(reply), (413, 414, 431, 400, None))
        reply = self.raw(b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(self.status_of(reply), (413, 414, 431, 400, None))
        reply = self.raw(b"GET /api/status HTTP/1.1\r\nHost: x\r\n" +
                         b"".join(b"X-H%d: v\r\n" % i for i in range(3000)) + b"\r\n")
        self.assertIn(self.status_of(reply), (413, 431, 400, None))
        # garbage, a bad version, a missing Host
        for data in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                     b"GET /api/status HTTP/1.1\r\n\r\n", b"GET\r\n\r\n",
                     b"GET /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                     b"GET /api/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"zz\r\n"):
            reply = self.raw(data)
            st = self.status_of(reply)
            self.assertTrue(st is None or 400 <= st < 600, (data, reply[:200]))
        self.assert_healthy()

    def test_ambiguous_body_length_is_refused(self):
        auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        for method, path in ((b"POST", b"/api/files/1/retry"), (b"GET", b"/api/status")):
            for framing in (b"Content-Length: 2\r\nContent-Length: 40\r\n",
                            b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
                            b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n"):
                reply = self.raw(method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                                 b"Content-Type: application/json\r\n" + auth + framing +
                                 b"Connection: close\r\n\r\n{}")
                self.assertEqual(self.status_of(reply), 400, (method, framing, reply[:300]))
        # the same length twice is one length
        reply = self.raw(b"POST /api/files/1/retry HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                         b"Content-Type: application/json\r\n" + auth +
                         b"Content-Length: 2\r\nContent-Length: 2\r\n"
                         b"Connection: close\r\n\r\n{}")
        self.assertEqual(self.status_of(reply), 200, reply[:300])
        self.assert_healthy()

    def test_trickling_sockets_do_not_keep_others_out(self):
        """Slowloris: 200 sockets from 3 addresses each send a header line every 2 s, never
        silent long enough for an idle timeout. Each address gets a few connections (the rest are
        closed at once), each of those is cut at the head deadline, and a normal request from
        another address gets its answer at once."""
        w = self.web
        socks = []
        try:
            for i in range(200):
                s = socket.socket()
                s.bind((f"127.0.1.{i % 3 + 1}", 0))
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", w.port))
                except BlockingIOError:
                    pass
                socks.append(s)
            t0 = time.monotonic()
            answered = None
            closed = set()
            next_line = t0
            n = 0
            while time.monotonic() - t0 < 40:
                if time.monotonic() >= next_line:
                    n += 1
                    for k, s in enumerate(socks):
                        if k in closed:
                            continue
                        line = (b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n" if n == 1
                                else b"X-Slow-%d: a\r\n" % n)
                        try:
                            s.send(line)
                        except BlockingIOError:
                            pass
                        except OSError:
                            closed.add(k)
                    next_line += 2
                for k, s in enumerate(socks):
                    if k in closed:
                        continue
                    try:
                        if s.recv(4096) == b"":
                            closed.add(k)
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed.add(k)
                if answered is None:
                    try:
                        st, _, _ = w.request("GET", "/api/status", timeout=2)
                        answered = time.monotonic() - t0
                        self.assertEqual(st, 200)
                    except (socket.timeout, TimeoutError, ConnectionError):
                        pass
                if answered is not None and len(closed) == len(socks):
                    break
                time.sleep(0.05)
            self.assertIsNotNone(answered, "a normal request never got an answer")
            self.assertLess(answered, 5, "the normal request waited for the trickling ones")
            self.assertEqual(len(closed), len(socks),
                             "trickling connections stayed open past the head deadline")
        finally:
            for s in socks:
                s.close()
        self.assert_healthy()

    def test_slow_partial_request_is_dropped_and_others_go_on(self):
        w = self.web
        s = socket.create_connection(("127.0.0.1", w.port), timeout=30)
        try:
            s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            t0 = time.monotonic()
            # the server answers others while this one trickles
            for _ in range(3):
                s.sendall(b"a")
                self.assertEqual(w.get_json("/api/status")["state"], "idle")
            # then closes it after its idle limit (10 s), without an answer
            s.settimeout(30)
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            elapsed = time.monotonic() - t0
            self.assertLess(elapsed, 25)
            self.assertNotIn(b"200 OK", data)
        finally:
            s.close()
        self.assert_healthy()
