# SPDX-License-Identifier: MIT
"""Notifications through real servers on loopback: e-mail to an SMTP server (Debian's
python3-aiosmtpd, tests/integration/smtpserver.py) with STARTTLS or implicit TLS, AUTH and a test
CA made here with openssl, the received message parsed with Python's email module; webhooks (json,
ntfy, Gotify) to an HTTP(S) server in this process that records every request. Errors are
checked to be classified transient (retry later) or permanent.

The C side is tests/tools/notify_send.c ($SNAPSYNC_NOTIFY_SEND), which sends a sample session
notification through one channel: exit 0 sent, 1 transient error, 2 permanent error."""

import email
import email.header
import email.policy
import email.utils
import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

from broker import make_ca
from harness import SANITIZER_MARKS, SnapsyncTest, free_port, wait_for

NOTIFY_SEND = os.environ.get("SNAPSYNC_NOTIFY_SEND", "notify_send")
SMTP_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smtpserver.py")
PASSWORD = "pw-SECRET-4711"
TOKEN = "tk-SECRET-0815"
CARD = "Caf\u00e9 <b>&\U0001F4F7"


def python_with_aiosmtpd():
    """The interpreter that can run smtpserver.py: this one, or Debian's (python3-aiosmtpd is a
    Debian package; a python3 of its own, as pyenv's, does not see it)."""
    for py in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(py) and subprocess.run([py, "-c", "import aiosmtpd"],
                                                 capture_output=True).returncode == 0:
            return py
    raise AssertionError("python3-aiosmtpd is missing: scripts/deps.sh --test installs it")


class SmtpServer:
    def __init__(self, test, mode="starttls", user=None, rcpt_reply=None):
        self.dir = os.path.join(test.dir, f"smtp-{mode}-{free_port()}")
        os.makedirs(self.dir)
        self.ca, crt, key = make_ca(self.dir, "smtp")
        self.port = free_port()
        cmd = [python_with_aiosmtpd(), SMTP_SERVER, "--port", str(self.port), "--out", self.dir,
               "--mode", mode, "--cert", crt, "--key", key]
        if user:
            cmd += ["--user", user, "--password", PASSWORD]
        if rcpt_reply:
            cmd += ["--rcpt-reply", rcpt_reply]
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()  # "ready", or "" when it died
        if line.strip() != "ready":
            self.stop()
            with open(os.path.join(self.dir, "server.log")) as f:
                raise AssertionError(f"the SMTP server did not start:\n{f.read()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.log.close()

    def message(self, n=1):
        path = os.path.join(self.dir, f"{n}.eml")
        wait_for(lambda: os.path.exists(path), 10, "the message at the SMTP server")
        with open(path, "rb") as f:
            raw = f.read()
        with open(os.path.join(self.dir, f"{n}.json")) as f:
            envelope = json.load(f)
        return raw, envelope


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request (method, path, headers, body) in server.requests and answers with
    server.reply = (status, body bytes)."""

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        status, data = self.server.reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class HookServer:
    def __init__(self, test, tls=False, port=0):
        """port 0: one the OS picks; else that one (a server that was down comes up)."""
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Recorder)
        self.httpd.requests = []
        self.httpd.reply = (200, b'{"id": 1}')
        self.ca = None
        scheme = "http"
        if tls:
            d = os.path.join(test.dir, "https")
            os.makedirs(d, exist_ok=True)
            self.ca, crt, key = make_ca(d, "hook")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(crt, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def requests(self):
        return self.httpd.requests


class NotifyTest(SnapsyncTest):
    def send(self, *args, code=0, token=False):
        env = dict(self.env)
        env["SMTP_PASSWORD"] = PASSWORD
        if token:
            env["NOTIFY_TOKEN"] = TOKEN
        cmd = [NOTIFY_SEND, *args] + (["--token-env"] if token else [])
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, p.stderr, f"sanitizer report from {cmd}:\n{p.stderr}")
        out = p.stdout + p.stderr
        self.assertNotIn(PASSWORD, out)
        self.assertNotIn(TOKEN, out)
        self.assertEqual(p.returncode, code, f"{cmd} exited {p.returncode}: {out}")
        return p.stdout.strip()

    # ---- e-mail ----

    def smtp(self, **kw):
        s = SmtpServer(self, **kw)
        self.cleanups.append(s.stop)
        return s

    def mail(self, server, security, *extra, code=0, to="ann@example.com,bob@example.org"):
        return self.send("mail", "127.0.0.1", str(server.port), security, "snapsync@pi.example",
                         to, "--ca", server.ca, *extra, code=code)

    def parse(self, raw):
        for i, b in enumerate(raw):
            if b == 0x0A:
                self.assertEqual(raw[i - 1], 0x0D, f"a bare LF at byte {i}")
        return email.message_from_bytes(raw, policy=email.policy.default)

    def test_mail_starttls_with_auth(self):
        server = self.smtp(mode="starttls", user="ann")
        self.assertEqual(self.mail(server, "starttls", "--user", "ann", "--card", CARD,
                                   "--failed", "25"), "sent")
        raw, envelope = server.message()
        self.assertEqual(envelope["auth"], "ann")
        self.assertTrue(envelope["tls"])
        self.assertEqual(envelope["mail_from"], "snapsync@pi.example")
        self.assertEqual(envelope["rcpt_tos"], ["ann@example.com", "bob@example.org"])
        m = self.parse(raw)
        self.assertEqual(str(m["Subject"]),
                         f"SnapSync: {CARD}: partly backed up, 25 files failed")
        self.assertIn("=?UTF-8?B?", raw.split(b"\r\n\r\n")[0].decode())  # encoded, not raw UTF-8
        self.assertEqual(m["From"], "snapsync@pi.example")
        self.assertEqual([a.addr_spec for a in m["To"].addresses],
                         ["ann@example.com", "bob@example.org"])
        self.assertEqual(m["MIME-Version"], "1.0")
        self.assertRegex(m["Message-ID"], r"^<[0-9a-f]{24}\.\d+@pi\.example>$")
        date = email.utils.parsedate_to_datetime(m["Date"])
        self.assertLess(abs(date.timestamp() - time.time()), 300)
        self.assertEqual(m.get_content_type(), "multipart/alternative")
        parts = list(m.iter_parts())
        self.assertEqual([p.get_content_type() for p in parts], ["text/plain", "text/html"])
        # the parts keep the message's CRLF line ends
        text, html = (p.get_content().replace("\r\n", "\n") for p in parts)
        self.assertIn(f"Card {CARD}: partly backed up, 25 files failed.", text)
        self.assertIn("  DCIM/100CANON/IMG_0019.CR2\n", text)
        self.assertNotIn("IMG_0020", text)
        self.assertIn("... and 5 more", text)
        self.assertIn("  immich: 3 files failed\n", text)
        self.assertIn("Dashboard: http://snapsync.local:8080/", text)
        self.assertIn("Caf\u00e9 &lt;b&gt;&amp;\U0001F4F7", html)
        self.assertNotIn("<b>&", html)
        self.assertIn('<a href="http://snapsync.local:8080/">', html)

    def test_mail_implicit_tls_dots_and_attachment(self):
        """smtps:// from the first byte; lines starting with '.' arrive as they were written
        (libcurl dot-stuffs them; a lone '.' would otherwise end the message there); an
        attachment comes as a third part."""
        server = self.smtp(mode="tls", user="ann")
        text = os.path.join(self.dir, "text.txt")
        with open(text, "w") as f:
            f.write("first line\n.\n.hidden\n..two\nlast line\n")
        report = os.path.join(self.dir, "report.txt")
        with open(report, "w") as f:
            f.write("the report\n")
        self.assertEqual(self.mail(server, "tls", "--user", "ann", "--text-file", text,
                                   "--attach", report), "sent")
        raw, envelope = server.message()
        self.assertEqual(envelope["auth"], "ann")
        m = self.parse(raw)
        self.assertEqual(m.get_content_type(), "multipart/mixed")
        body = m.get_body(preferencelist=("plain",))
        self.assertEqual(body.get_content().replace("\r\n", "\n"),
                         "first line\n.\n.hidden\n..two\nlast line\n")
        self.assertIsNotNone(m.get_body(preferencelist=("html",)))
        atts = list(m.iter_attachments())
        self.assertEqual(len(atts), 1)
        self.assertEqual(atts[0].get_filename(), "report.txt")
        self.assertEqual(atts[0].get_content(), "the report\n")

    def test_mail_certificate_verified(self):
        """Without the test CA the server's certificate is not trusted: a permanent error, and
        nothing was sent (the password neither)."""
        server = self.smtp(mode="starttls", user="ann")
        out = self.send("mail", "127.0.0.1", str(server.port), "starttls", "snapsync@pi.example",
                        "ann@example.com", "--user", "ann", code=2)
        self.assertIn("error permanent: TLS", out)
        self.assertIn("tls_ca_file", out)
        self.assertFalse(os.path.exists(os.path.join(server.dir, "1.json")))

    def test_mail_errors_classified(self):
        server = self.smtp(mode="starttls", user="ann")
        out = self.mail(server, "starttls", "--user", "bob", code=2)  # 535: wrong credentials
        self.assertIn("error permanent: the mail server refused the credentials", out)
        self.assertIn("535", out)

        later = self.smtp(mode="starttls", rcpt_reply="451 4.3.0 Mailbox busy, try later")
        out = self.mail(later, "starttls", code=1)
        self.assertIn("error transient:", out)
        self.assertIn("451 4.3.0 Mailbox busy", out)

        never = self.smtp(mode="starttls", rcpt_reply="550 5.1.1 No such user")
        out = self.mail(never, "starttls", code=2)
        self.assertIn("error permanent:", out)
        self.assertIn("550 5.1.1 No such user", out)

        plain = self.smtp(mode="plain")  # STARTTLS required but not offered: never in clear
        out = self.mail(plain, "starttls", "--user", "ann", code=2)
        self.assertIn("does not offer STARTTLS", out)

        closed = free_port()
        out = self.send("mail", "127.0.0.1", str(closed), "tls", "snapsync@pi.example",
                        "ann@example.com", code=1)
        self.assertIn("error transient: cannot reach the mail server", out)

    def test_mail_header_injection_refused(self):
        server = self.smtp(mode="starttls")
        out = self.mail(server, "starttls", to="ann@example.com\r\nBcc: eve@example.com", code=2)
        self.assertIn("notify.email.to", out)
        self.assertFalse(os.path.exists(os.path.join(server.dir, "1.json")))

    # ---- webhooks ----

    def hooks(self, tls=False):
        s = HookServer(self, tls=tls)
        self.cleanups.append(s.stop)
        return s

    def test_webhook_json_over_https(self):
        server = self.hooks(tls=True)
        self.assertEqual(self.send("hook", server.url + "/hooks/snapsync", "json", "--ca",
                                   server.ca, "--card", CARD, "--failed", "3", token=True),
                         "sent")
        self.assertEqual(len(server.requests), 1)
        method, path, headers, body = server.requests[0]
        self.assertEqual((method, path), ("POST", "/hooks/snapsync"))
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["Authorization"], f"Bearer {TOKEN}")
        o = json.loads(body)
        self.assertEqual(o["event"], "session")
        self.assertEqual(o["result"], "partial")
        self.assertEqual(o["card"], CARD)
        self.assertEqual(o["counts"], {"copied": 120, "already_backed_up": 30, "duplicates": 2,
                                       "failed": 3})
        self.assertEqual(o["failed_files"][2], "DCIM/100CANON/IMG_0002.CR2")
        self.assertEqual(o["failed_files_more"], 0)
        self.assertEqual(o["destinations"][1], {"name": "immich", "state": "3 files failed"})
        self.assertFalse(o["safe_to_remove"])
        self.assertEqual(o["dashboard_url"], "http://snapsync.local:8080/")
        self.assertEqual(o["bytes"], 3500000000)

        # without the CA: not trusted, permanent
        out = self.send("hook", server.url + "/x", "json", code=2)
        self.assertIn("not trusted", out)

    def test_webhook_ntfy(self):
        server = self.hooks()
        self.assertEqual(self.send("hook", server.url + "/snapsync-topic", "ntfy", "--card", CARD,
                                   token=True), "sent")
        method, path, headers, body = server.requests[0]
        self.assertEqual((method, path), ("POST", "/snapsync-topic"))
        title = str(email.header.make_header(email.header.decode_header(headers["Title"])))
        self.assertEqual(title, f"SnapSync: {CARD}: backed up, safe to remove")
        self.assertEqual(headers["Priority"], "3")
        self.assertEqual(headers["Tags"], "white_check_mark")
        self.assertEqual(headers["Click"], "http://snapsync.local:8080/")
        self.assertEqual(headers["Authorization"], f"Bearer {TOKEN}")
        self.assertIn(f"Card {CARD}: backed up, safe to remove.", body.decode())

    def test_webhook_gotify(self):
        server = self.hooks()
        self.assertEqual(self.send("hook", server.url + "/gotify/", "gotify", "--failed", "1",
                                   token=True), "sent")
        method, path, headers, body = server.requests[0]
        self.assertEqual((method, path), ("POST", "/gotify/message"))
        self.assertEqual(headers["X-Gotify-Key"], TOKEN)
        self.assertNotIn("Authorization", headers)
        o = json.loads(body)
        self.assertEqual(o["title"], "SnapSync: EOS_DIGITAL: partly backed up, 1 file failed")
        self.assertIn("IMG_0000.CR2", o["message"])
        self.assertEqual(o["priority"], 6)
        self.assertEqual(o["extras"]["client::notification"]["click"]["url"],
                         "http://snapsync.local:8080/")

    def test_webhook_errors_classified(self):
        server = self.hooks()
        server.httpd.reply = (500, b'{"error":"database is locked"}')
        out = self.send("hook", server.url + "/t", "ntfy", code=1)
        self.assertIn("error transient: the webhook answered HTTP 500: database is locked", out)

        server.httpd.reply = (401, b'{"error":"Unauthorized","errorCode":401,'
                                   b'"errorDescription":"you need to provide a valid token"}')
        out = self.send("hook", server.url + "/", "gotify", token=True, code=2)
        self.assertIn("error permanent:", out)
        self.assertIn("HTTP 401: you need to provide a valid token", out)

        server.httpd.reply = (400, b"bad request body")
        out = self.send("hook", server.url + "/t", "json", code=2)
        self.assertIn("HTTP 400: bad request body", out)

        out = self.send("hook", f"http://127.0.0.1:{free_port()}/t", "json", code=1)
        self.assertIn("error transient: cannot reach", out)

        # a server that takes the connection and never answers: a timeout, transient
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        self.cleanups.append(silent.close)
        started = time.monotonic()
        out = self.send("hook", f"http://127.0.0.1:{silent.getsockname()[1]}/t", "json",
                        "--timeout", "1", code=1)
        self.assertIn("error transient:", out)
        self.assertLess(time.monotonic() - started, 20)

    def test_webhook_token_injection_refused(self):
        server = self.hooks()
        env_token = TOKEN + "\r\nX-Evil: 1"
        env = dict(self.env, NOTIFY_TOKEN=env_token)
        p = subprocess.run([NOTIFY_SEND, "hook", server.url + "/t", "ntfy", "--token-env"],
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("notify.webhooks token", p.stdout)
        self.assertNotIn(TOKEN, p.stdout + p.stderr)
        self.assertEqual(server.requests, [])
