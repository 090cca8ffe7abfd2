# SPDX-License-Identifier: MIT
"""Notifications through real servers on loopback: e-mail to an SMTP server (Debian's
python3-aiosmtpd, tests/integration/smtpserver.py) with STARTTLS or implicit TLS, AUTH and a test
CA made here with openssl, the received message parsed with Python's email module; webhooks (json,
ntfy, Gotify) to an HTTP(S) server in this process that records every request. Errors are
checked to be classified transient (retry later) or permanent.

NotifyTest drives `snapsync notify-test --json` with a config file's `notify` section (the
sample: a completed backup of card SNAPSYNC_TEST). MessageTest sends messages of any content
(untrusted names, failed files, lines starting with '.', an attachment) through
tests/tools/notify_send.c ($SNAPSYNC_NOTIFY_SEND): exit 0 sent, 1 transient, 2 permanent."""

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
from harness import SANITIZER_MARKS, SnapsyncTest, free_port, wait_for, write_config

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


DASHBOARD = "http://snapsync.local:8080/"
SAMPLE_SUBJECT = "SnapSync: SNAPSYNC_TEST: backed up, safe to remove"


def check_output(test, p, cmd):
    out = p.stdout + p.stderr
    for mark in SANITIZER_MARKS:
        test.assertNotIn(mark, p.stderr, f"sanitizer report from {cmd}:\n{p.stderr}")
    test.assertNotIn(PASSWORD, out)
    test.assertNotIn(TOKEN, out)
    return out


class NotifyTest(SnapsyncTest):
    """`snapsync notify-test` with the notify section of a config file."""

    def setUp(self):
        super().setUp()
        self.dotenv()
        for k in ("SMTP_USERNAME", "SMTP_PASSWORD", "NTFY_TOKEN"):
            self.env.pop(k, None)

    def dotenv(self, password=True):
        """The secrets in .env: the SMTP password (left out for a server without AUTH: a
        password without a user is refused) and the token token_env names."""
        with open(os.path.join(self.dir, ".env"), "w") as f:
            f.write((f"SMTP_PASSWORD={PASSWORD}\n" if password else "") + f"NTFY_TOKEN={TOKEN}\n")
        os.chmod(os.path.join(self.dir, ".env"), 0o600)

    def configure(self, notify):
        """notify: the YAML of the notify section's keys, indented by two."""
        write_config(self.config, self.dest, self.db,
                     extra=f"notify:\n  dashboard_url: \"{DASHBOARD}\"\n{notify}")

    def notify_test(self, notify=None, code=0, text=False):
        if notify is not None:
            self.configure(notify)
        args = ["notify-test"] + ([] if text else ["--json"])
        p = self.snapsync(*args, timeout=120)
        out = check_output(self, p, args)
        self.assertEqual(p.returncode, code, out)
        if text or code == 2:
            return out
        o = json.loads(p.stdout)
        self.assertEqual(o["ok"], code == 0)
        return o["channels"]

    def email(self, server, security="starttls", user="ann", ca=True, to=None):
        to = to or ["ann@example.com", "bob@example.org"]
        yaml = (f"  email:\n    enabled: true\n    host: 127.0.0.1\n    port: {server.port}\n"
                f"    security: {security}\n    from: snapsync@pi.example\n"
                f"    to: {json.dumps(to)}\n")
        if user:
            yaml += f"    username: {user}\n"
        if ca:
            yaml += f"    tls_ca_file: {server.ca}\n"
        return yaml

    # ---- e-mail ----

    def smtp(self, **kw):
        s = SmtpServer(self, **kw)
        self.cleanups.append(s.stop)
        return s

    def parse(self, raw):
        for i, b in enumerate(raw):
            if b == 0x0A:
                self.assertEqual(raw[i - 1], 0x0D, f"a bare LF at byte {i}")
        return email.message_from_bytes(raw, policy=email.policy.default)

    def test_mail_starttls_with_auth(self):
        server = self.smtp(mode="starttls", user="ann")
        self.assertEqual(self.notify_test(self.email(server)),
                         [{"name": "email", "ok": True, "error": None, "transient": False}])
        raw, envelope = server.message()
        self.assertEqual(envelope["auth"], "ann")
        self.assertTrue(envelope["tls"])
        self.assertEqual(envelope["mail_from"], "snapsync@pi.example")
        self.assertEqual(envelope["rcpt_tos"], ["ann@example.com", "bob@example.org"])
        m = self.parse(raw)
        self.assertEqual(str(m["Subject"]), SAMPLE_SUBJECT)
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
        text, html = (p.get_content().replace("\r\n", "\n") for p in parts)
        self.assertIn("Card SNAPSYNC_TEST: backed up, safe to remove.", text)
        self.assertIn("  unraid: ok\n", text)  # the configured destination
        self.assertIn(f"Dashboard: {DASHBOARD}", text)
        self.assertIn(f'<a href="{DASHBOARD}">', html)

    def test_mail_implicit_tls_port_by_security(self):
        """security tls: smtps:// from the first byte; the username from SMTP_USERNAME."""
        server = self.smtp(mode="tls", user="ann")
        self.env["SMTP_USERNAME"] = "ann"
        self.assertTrue(self.notify_test(self.email(server, "tls", user=None))[0]["ok"])
        raw, envelope = server.message()
        self.assertEqual(envelope["auth"], "ann")
        self.assertEqual(str(self.parse(raw)["Subject"]), SAMPLE_SUBJECT)

    def test_mail_certificate_verified(self):
        """Without the test CA the server's certificate is not trusted: a permanent error, and
        nothing was sent (the password neither)."""
        server = self.smtp(mode="starttls", user="ann")
        ch = self.notify_test(self.email(server, ca=False), code=1)[0]
        self.assertFalse(ch["ok"])
        self.assertFalse(ch["transient"])
        self.assertIn("TLS", ch["error"])
        self.assertIn("tls_ca_file", ch["error"])
        self.assertFalse(os.path.exists(os.path.join(server.dir, "1.json")))

    def test_mail_errors_classified(self):
        server = self.smtp(mode="starttls", user="ann")
        ch = self.notify_test(self.email(server, user="bob"), code=1)[0]  # 535
        self.assertIn("the mail server refused the credentials", ch["error"])
        self.assertIn("535", ch["error"])
        self.assertFalse(ch["transient"])

        self.dotenv(password=False)
        later = self.smtp(mode="starttls", rcpt_reply="451 4.3.0 Mailbox busy, try later")
        ch = self.notify_test(self.email(later, user=None), code=1)[0]
        self.assertTrue(ch["transient"])
        self.assertIn("451 4.3.0 Mailbox busy", ch["error"])

        never = self.smtp(mode="starttls", rcpt_reply="550 5.1.1 No such user")
        ch = self.notify_test(self.email(never, user=None), code=1)[0]
        self.assertFalse(ch["transient"])
        self.assertIn("550 5.1.1 No such user", ch["error"])

        self.dotenv()
        plain = self.smtp(mode="plain")  # STARTTLS required but not offered: never in clear
        ch = self.notify_test(self.email(plain), code=1)[0]
        self.assertIn("does not offer STARTTLS", ch["error"])

        class Closed:
            port = free_port()
            ca = server.ca
        self.dotenv(password=False)
        out = self.notify_test(self.email(Closed, "tls", user=None), code=1, text=True)
        self.assertIn("FAIL  email [would be retried]: cannot reach the mail server", out)

    def test_mail_header_injection_refused(self):
        """An address with CR LF is refused by the config, with its line; nothing is sent."""
        server = self.smtp(mode="starttls")
        self.configure(self.email(server, to=["ann@example.com\r\nBcc: eve@example.com"]))
        p = self.snapsync("notify-test", check=2)
        self.assertRegex(p.stderr, r"config\.yaml:\d+: notify\.email\.to: item contains a "
                                   r"control character")
        self.assertFalse(os.path.exists(os.path.join(server.dir, "1.json")))

        self.configure(self.email(server, "none"))  # credentials in clear: refused
        p = self.snapsync("notify-test", check=2)
        self.assertIn("notify.email.security: none sends in clear", p.stderr)

    # ---- webhooks ----

    def hooks(self, tls=False):
        s = HookServer(self, tls=tls)
        self.cleanups.append(s.stop)
        return s

    def test_webhook_json_over_https(self):
        server = self.hooks(tls=True)
        ch = self.notify_test(f"  webhooks:\n    - url: {server.url}/hooks/snapsync\n"
                              f"      token_env: NTFY_TOKEN\n      tls_ca_file: {server.ca}\n")
        self.assertEqual(ch, [{"name": "webhook 1 (json)", "ok": True, "error": None,
                               "transient": False}])
        self.assertEqual(len(server.requests), 1)
        method, path, headers, body = server.requests[0]
        self.assertEqual((method, path), ("POST", "/hooks/snapsync"))
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["Authorization"], f"Bearer {TOKEN}")
        o = json.loads(body)
        self.assertEqual(o["event"], "session")
        self.assertEqual(o["result"], "completed")
        self.assertEqual(o["card"], "SNAPSYNC_TEST")
        self.assertEqual(o["counts"], {"copied": 42, "already_backed_up": 7, "duplicates": 1,
                                       "failed": 0})
        self.assertEqual(o["destinations"], [{"name": "unraid", "state": "ok"}])
        self.assertTrue(o["safe_to_remove"])
        self.assertEqual(o["dashboard_url"], DASHBOARD)

        # without the CA: not trusted, permanent
        ch = self.notify_test(f"  webhooks:\n    - {{url: \"{server.url}/x\"}}\n", code=1)
        self.assertIn("not trusted", ch[0]["error"])
        self.assertFalse(ch[0]["transient"])

    def test_webhook_ntfy_and_gotify_and_mail_together(self):
        """Every channel is tried and reported, e-mail first; one failing makes exit 1."""
        server = self.hooks()
        smtp = self.smtp(mode="starttls", user="ann")
        ch = self.notify_test(self.email(smtp) +
                              f"  webhooks:\n"
                              f"    - {{url: \"{server.url}/snapsync-topic\", format: ntfy, "
                              f"token_env: NTFY_TOKEN}}\n"
                              f"    - {{url: \"{server.url}/gotify/\", format: gotify, "
                              f"token: \"{TOKEN}\"}}\n")
        self.assertEqual([(c["name"], c["ok"]) for c in ch],
                         [("email", True), ("webhook 1 (ntfy)", True),
                          ("webhook 2 (gotify)", True)])
        self.assertEqual(str(self.parse(smtp.message()[0])["Subject"]), SAMPLE_SUBJECT)
        method, path, headers, body = server.requests[0]
        self.assertEqual((method, path), ("POST", "/snapsync-topic"))
        self.assertEqual(headers["Title"], SAMPLE_SUBJECT)
        self.assertEqual(headers["Priority"], "3")
        self.assertEqual(headers["Tags"], "white_check_mark")
        self.assertEqual(headers["Click"], DASHBOARD)
        self.assertEqual(headers["Authorization"], f"Bearer {TOKEN}")
        self.assertIn("Card SNAPSYNC_TEST: backed up, safe to remove.", body.decode())
        method, path, headers, body = server.requests[1]
        self.assertEqual((method, path), ("POST", "/gotify/message"))
        self.assertEqual(headers["X-Gotify-Key"], TOKEN)
        self.assertNotIn("Authorization", headers)
        o = json.loads(body)
        self.assertEqual(o["title"], SAMPLE_SUBJECT)
        self.assertEqual(o["priority"], 4)
        self.assertEqual(o["extras"]["client::notification"]["click"]["url"], DASHBOARD)

        server.httpd.reply = (500, b'{"error":"database is locked"}')
        out = self.notify_test(code=1, text=True)
        self.assertIn("OK    email\n", out)
        self.assertIn("FAIL  webhook 1 (ntfy) [would be retried]: the webhook answered HTTP 500: "
                      "database is locked", out)

    def test_webhook_errors_classified(self):
        server = self.hooks()
        server.httpd.reply = (401, b'{"error":"Unauthorized","errorCode":401,'
                                   b'"errorDescription":"you need to provide a valid token"}')
        ch = self.notify_test(f"  webhooks:\n    - {{url: \"{server.url}/\", format: gotify, "
                              f"token_env: NTFY_TOKEN}}\n", code=1)
        self.assertFalse(ch[0]["transient"])
        self.assertIn("HTTP 401: you need to provide a valid token", ch[0]["error"])

        ch = self.notify_test(f"  webhooks:\n    - {{url: \"http://127.0.0.1:{free_port()}/t\"}}\n",
                              code=1)
        self.assertTrue(ch[0]["transient"])
        self.assertIn("cannot reach", ch[0]["error"])

    def test_webhook_token_injection_refused(self):
        """A token holding CR LF never reaches a header: the config is refused, naming the
        variable, never quoting it."""
        server = self.hooks()
        self.env["NTFY_TOKEN"] = TOKEN + "\r\nX-Evil: 1"
        self.configure(f"  webhooks:\n    - {{url: \"{server.url}/t\", format: ntfy, "
                       f"token_env: NTFY_TOKEN}}\n")
        p = self.snapsync("notify-test", check=2)
        check_output(self, p, "notify-test")
        self.assertIn("environment: NTFY_TOKEN: value contains a control character", p.stderr)
        self.assertEqual(server.requests, [])

    def test_no_channel(self):
        out = self.notify_test("  events: [failed]\n", code=2)
        self.assertIn("no notification channel is configured", out)

    def test_secrets_never_shown(self):
        """The SMTP password (.env), a token in the file and one from token_env: masked in
        `snapsync config` and its JSON, scrubbed from logs even when a server echoes them."""
        server = self.hooks()
        server.httpd.reply = (403, json.dumps({"error": f"token {TOKEN} is revoked"}).encode())
        smtp = self.smtp(mode="starttls", user="ann")
        other = "tk-FILE-SECRET-77"
        self.configure(self.email(smtp) +
                       f"  webhooks:\n"
                       f"    - {{url: \"{server.url}/a\", token_env: NTFY_TOKEN}}\n"
                       f"    - {{url: \"http://192.0.2.1:9/b\", token: \"{other}\"}}\n")
        for args in (["config"], ["config", "--json"]):
            p = self.snapsync(*args, check=0)
            out = check_output(self, p, args)
            self.assertNotIn(other, out)
            self.assertIn("********", out)
        # a token over http:// to another host is warned about
        self.assertIn("notify.webhooks[1]: its token goes in clear over http://", p.stderr)
        self.configure(self.email(smtp) +
                       f"  webhooks:\n    - {{url: \"{server.url}/a\", token_env: NTFY_TOKEN}}\n")
        p = self.snapsync("notify-test", timeout=120)
        out = check_output(self, p, "notify-test")
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("HTTP 403: token *** is revoked", out)


class MessageTest(SnapsyncTest):
    """Messages of any content through tests/tools/notify_send.c."""

    def send(self, *args, code=0):
        env = dict(self.env, SMTP_PASSWORD=PASSWORD)
        cmd = [NOTIFY_SEND, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        out = check_output(self, p, cmd)
        self.assertEqual(p.returncode, code, f"{cmd} exited {p.returncode}: {out}")
        return p.stdout.strip()

    def smtp(self, **kw):
        s = SmtpServer(self, **kw)
        self.cleanups.append(s.stop)
        return s

    def mail(self, server, security, *extra):
        return self.send("mail", "127.0.0.1", str(server.port), security, "snapsync@pi.example",
                         "ann@example.com", "--ca", server.ca, *extra)

    def test_untrusted_names_and_failed_files(self):
        server = self.smtp(mode="starttls", user="ann")
        self.assertEqual(self.mail(server, "starttls", "--user", "ann", "--card", CARD,
                                   "--failed", "25"), "sent")
        raw, _ = server.message()
        m = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(str(m["Subject"]), f"SnapSync: {CARD}: partly backed up, 25 files failed")
        self.assertIn("=?UTF-8?B?", raw.split(b"\r\n\r\n")[0].decode())  # encoded, not raw UTF-8
        text, html = (p.get_content().replace("\r\n", "\n") for p in m.iter_parts())
        self.assertIn("  DCIM/100CANON/IMG_0019.CR2\n", text)
        self.assertNotIn("IMG_0020", text)
        self.assertIn("... and 5 more", text)
        self.assertIn("  immich: 3 files failed\n", text)
        self.assertIn("Caf\u00e9 &lt;b&gt;&amp;\U0001F4F7", html)
        self.assertNotIn("<b>&", html)

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
        m = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(m.get_content_type(), "multipart/mixed")
        body = m.get_body(preferencelist=("plain",))
        self.assertEqual(body.get_content().replace("\r\n", "\n"),
                         "first line\n.\n.hidden\n..two\nlast line\n")
        self.assertIsNotNone(m.get_body(preferencelist=("html",)))
        atts = list(m.iter_attachments())
        self.assertEqual(len(atts), 1)
        self.assertEqual(atts[0].get_filename(), "report.txt")
        self.assertEqual(atts[0].get_content(), "the report\n")

    def test_webhook_silent_server_times_out(self):
        """A server that takes the connection and never answers: a timeout, transient."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        self.cleanups.append(silent.close)
        started = time.monotonic()
        out = self.send("hook", f"http://127.0.0.1:{silent.getsockname()[1]}/t", "json",
                        "--timeout", "1", code=1)
        self.assertIn("error transient:", out)
        self.assertLess(time.monotonic() - started, 20)
