# SPDX-License-Identifier: MIT
"""The notification outbox against real servers on loopback: the SMTP server of test_notify.py
(Debian's python3-aiosmtpd, STARTTLS, AUTH, a test CA) and an HTTP receiver. Each queue and each
delivery is its own process (tests/tools/outbox_run.c, $SNAPSYNC_OUTBOX_RUN) with its own
database connection, as a service restarted in between would be; times are passed with --now,
so backoff and the rate limit are checked without waiting."""

import email
import email.policy
import json
import os
import subprocess

from harness import SANITIZER_MARKS, SnapsyncTest, free_port
from test_notify import PASSWORD, TOKEN, HookServer, SmtpServer

OUTBOX_RUN = os.environ.get("SNAPSYNC_OUTBOX_RUN", "outbox_run")
T0 = 1800000000


class OutboxTest(SnapsyncTest):
    def run_outbox(self, verb, now, *args):
        env = dict(self.env)
        env["SMTP_PASSWORD"] = PASSWORD
        env["NOTIFY_TOKEN"] = TOKEN
        cmd = [OUTBOX_RUN, self.db, verb, "--now", str(now), "--timeout", "5", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        out = p.stdout + p.stderr
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, p.stderr, f"sanitizer report from {cmd}:\n{p.stderr}")
        self.assertNotIn(PASSWORD, out)
        self.assertNotIn(TOKEN, out)
        self.assertEqual(p.returncode, 0, f"{cmd} exited {p.returncode}: {out}")
        return p.stdout

    def deliver(self, now, *args):
        out = self.run_outbox("deliver", now, *args)
        first = out.splitlines()[0]
        return dict(kv.split("=") for kv in first.split()), out

    def smtp(self):
        s = SmtpServer(self, mode="starttls", user="ann")
        self.cleanups.append(s.stop)
        return s

    def test_webhook_down_then_up_delivered_once(self):
        """Nothing listening: the delivery fails transiently and stays pending, retried after
        a minute; once the receiver is up it arrives, once."""
        port = free_port()
        url = f"http://127.0.0.1:{port}/hook?token=in-the-url"
        self.run_outbox("queue", T0, "--hook", url, "--card", "EOS_R6")
        res, out = self.deliver(T0, "--hook", url)
        self.assertEqual((res["retry"], res["pending"], res["next_due"]),
                         ("1", "1", str(T0 + 60)), out)
        receiver = HookServer(self, port=port)
        self.cleanups.append(receiver.stop)
        res, out = self.deliver(T0 + 59, "--hook", url)  # the backoff holds
        self.assertEqual((res["messages"], res["pending"]), ("0", "1"), out)
        self.assertEqual(receiver.requests, [])
        res, out = self.deliver(T0 + 60, "--hook", url)
        self.assertEqual((res["messages"], res["sent"], res["pending"], res["next_due"]),
                         ("1", "1", "0", "0"), out)
        res, out = self.deliver(T0 + 3600, "--hook", url)
        self.assertEqual(res["messages"], "0", out)
        self.assertEqual(len(receiver.requests), 1)
        method, path, headers, body = receiver.requests[0]
        self.assertEqual(path, "/hook?token=in-the-url")
        self.assertEqual(headers["Authorization"], f"Bearer {TOKEN}")
        msg = json.loads(body)
        self.assertEqual(msg["card"], "EOS_R6")
        self.assertEqual(msg["result"], "completed")
        # the key stored has neither the token of the URL nor the header's
        for path in (self.db, self.db + "-wal"):
            if os.path.exists(path):
                with open(path, "rb") as f:
                    raw = f.read()
                self.assertNotIn(b"in-the-url", raw)
                self.assertNotIn(TOKEN.encode(), raw)

    def test_mail_down_then_up_and_merged(self):
        """The mail server down at first; two results queued within the minute arrive as one
        merged message once it is up, and the json webhook gets one object with both."""
        down = free_port()
        hook_port = free_port()
        hook = f"http://127.0.0.1:{hook_port}/"
        self.run_outbox("queue", T0, "--mail", f"127.0.0.1:{down}", "--hook", hook,
                        "--card", "CARD_A")
        self.run_outbox("queue", T0 + 20, "--mail", f"127.0.0.1:{down}", "--hook", hook,
                        "--card", "CARD_B", "--failed", "3")
        res, out = self.deliver(T0 + 30, "--mail", f"127.0.0.1:{down}", "--user", "ann",
                                "--hook", hook)
        self.assertEqual((res["retry"], res["pending"]), ("4", "4"), out)

        server = self.smtp()
        receiver = HookServer(self, port=hook_port)
        self.cleanups.append(receiver.stop)
        res, out = self.deliver(T0 + 90, "--mail", f"127.0.0.1:{server.port}", "--ca", server.ca,
                                "--user", "ann", "--hook", hook)
        self.assertEqual((res["messages"], res["sent"], res["pending"]), ("2", "4", "0"), out)
        raw, envelope = server.message(1)
        self.assertFalse(os.path.exists(os.path.join(server.dir, "2.eml")))
        self.assertEqual(envelope["auth"], "ann")
        m = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(str(m["Subject"]), "SnapSync: 2 results: 1 completed, 1 partial")
        text = m.get_body(("plain",)).get_content().replace("\r\n", "\n")
        self.assertLess(text.index("Card CARD_A: backed up"),
                        text.index("Card CARD_B: partly backed up, 3 files failed"))
        self.assertIn("  DCIM/100CANON/IMG_0002.CR2\n", text)
        html = m.get_body(("html",)).get_content()
        self.assertIn("CARD_A", html)
        self.assertIn("CARD_B", html)

        self.assertEqual(len(receiver.requests), 1)
        body = json.loads(receiver.requests[0][3])
        self.assertEqual(body["count"], 2)
        self.assertEqual([r["card"] for r in body["results"]], ["CARD_A", "CARD_B"])
        self.assertEqual(body["results"][1]["failed_files"][2], "DCIM/100CANON/IMG_0002.CR2")

    def test_refused_credentials_fail_at_once(self):
        """A permanent error (the wrong password) is not retried; its error is kept, without
        the password."""
        server = self.smtp()
        self.run_outbox("queue", T0, "--mail", f"127.0.0.1:{server.port}")
        res, out = self.deliver(T0, "--mail", f"127.0.0.1:{server.port}", "--ca", server.ca,
                                "--user", "bob")
        self.assertEqual((res["failed"], res["pending"], res["next_due"]), ("1", "0", "0"), out)
        self.assertIn("failed email: ", out)
        self.assertIn("535", out)
