# SPDX-License-Identifier: MIT
"""Notifications of real backups (issue 18): `snapsync backup` queues its session's
notification and delivers it before exiting; what it could not deliver the service
(`snapsync start`) delivers, once. Real servers on loopback: the HTTP receiver and the aiosmtpd
SMTP server of test_notify.py."""

import email
import email.policy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import unittest

from harness import BIN, SANITIZER_MARKS, SnapsyncTest, free_port, make_photo, wait_for, \
    write_config
from test_notify import PASSWORD, TOKEN, HookServer, SmtpServer
from test_service import Notifier

CARD_LABEL = "NOTIFYCARD"


class NotifyServiceTest(SnapsyncTest):
    def setUp(self):
        super().setUp()
        for k in ("SMTP_USERNAME", "SMTP_PASSWORD", "HOOK_TOKEN"):
            self.env.pop(k, None)
        with open(os.path.join(self.dir, ".env"), "w") as f:
            f.write(f"SMTP_PASSWORD={PASSWORD}\nHOOK_TOKEN={TOKEN}\n")
        os.chmod(os.path.join(self.dir, ".env"), 0o600)
        self.card = os.path.join(self.dir, CARD_LABEL)
        for i in range(3):
            make_photo(os.path.join(self.card, "DCIM", "100TEST", f"IMG_{i:04d}.JPG"), self.dir,
                       "2024:05:06 07:08:09")
        self.proc = None
        self.cleanups.append(self.kill_service)

    def configure(self, notify, backup=None):
        write_config(self.config, self.dest, self.db, backup=backup,
                     extra="sd_card:\n  auto_detect: false\n"
                           f"notify:\n  dashboard_url: \"http://snapsync.local:8080/\"\n{notify}")

    def webhook(self, url):
        return f"  webhooks:\n    - {{url: \"{url}/hook\", format: json, token_env: HOOK_TOKEN}}\n"

    def deliveries(self):
        con = sqlite3.connect(self.db)
        try:
            return con.execute("SELECT channel, state, attempts FROM deliveries").fetchall()
        finally:
            con.close()

    def rate_limit_passed(self):
        """One message a minute per channel: the test moves the last one a minute back."""
        con = sqlite3.connect(self.db)
        con.execute("UPDATE deliveries SET sent_at = sent_at - 120 WHERE state = 'sent'")
        con.commit()
        con.close()

    def messages(self, hook):
        return [json.loads(body) for _, _, _, body in hook.requests]

    # ---- the service ----

    def start(self):
        self.notify = Notifier()
        self.cleanups.append(self.notify.close)
        self.log_path = os.path.join(self.dir, "service.log")
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen([BIN, "--config", self.config, "start"],
                                     env=dict(self.env, NOTIFY_SOCKET=self.notify.path),
                                     stdout=subprocess.DEVNULL, stderr=self.log_file, cwd=self.dir)
        if not self.notify.wait_for("READY=1", 30):
            self.fail(f"the service is not ready:\n{self.log()}")

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=60)
        self.proc = None
        self.log_file.close()
        text = self.log()
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, text, f"sanitizer report:\n{text}")
        self.assertEqual(rc, 0, text)
        return text

    def kill_service(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.log_file.close()

    # ---- tests ----

    def test_backup_sends_one_json_message(self):
        hook = HookServer(self)
        self.cleanups.append(hook.stop)
        self.configure(self.webhook(hook.url))
        p = self.snapsync("backup", self.card, "--json", check=0)
        self.assertNotIn(TOKEN, p.stdout + p.stderr)
        self.assertEqual(len(hook.requests), 1, p.stderr)
        method, path, headers, _ = hook.requests[0]
        self.assertEqual((method, path), ("POST", "/hook"))
        self.assertEqual(headers["Authorization"], f"Bearer {TOKEN}")
        m = self.messages(hook)[0]
        self.assertEqual((m["event"], m["result"], m["card"]), ("session", "completed", CARD_LABEL))
        self.assertEqual(m["counts"],
                         {"copied": 3, "already_backed_up": 0, "duplicates": 0, "failed": 0})
        self.assertTrue(m["safe_to_remove"])
        self.assertEqual(m["destinations"][0]["state"], "ok")
        self.assertEqual(m["dashboard_url"], "http://snapsync.local:8080/")
        self.assertEqual([d[1] for d in self.deliveries()], ["sent"])
        self.assertRegex(p.stderr, r"notification '.*NOTIFYCARD.*' sent on webhook:")

        # a dry run queues nothing; an event left out of notify.events neither
        self.snapsync("backup", self.card, "--dry-run", check=0)
        self.configure("  events: [failed]\n" + self.webhook(hook.url))
        self.snapsync("backup", self.card, check=0)
        self.assertEqual(len(hook.requests), 1)
        self.assertEqual(len(self.deliveries()), 1)

    def test_verify_finding_a_deleted_copy_sends_verify_problem(self):
        hook = HookServer(self)
        self.cleanups.append(hook.stop)
        self.configure(self.webhook(hook.url))
        self.snapsync("backup", self.card, check=0)
        self.assertEqual(len(hook.requests), 1)
        session = self.messages(hook)[0]
        # the destination is named as the config names it, not by its database id
        name = session["destinations"][0]["name"]
        self.assertFalse(name.startswith("local:"), name)
        label = name.split(": ", 1)[-1]  # cut to 128 bytes: a long test folder may be
        self.assertTrue(label.startswith("local /"), name)
        self.assertTrue(self.dest.startswith(label[len("local "):]), name)
        copies = sorted(os.path.join(d, f) for d, _, fs in os.walk(self.dest) for f in fs
                        if f.endswith(".JPG"))
        self.assertEqual(len(copies), 3)
        os.remove(copies[0])
        self.rate_limit_passed()

        p = self.snapsync("verify", "--all", check=1)
        self.assertNotIn(TOKEN, p.stdout + p.stderr)
        self.assertEqual(len(hook.requests), 2, p.stderr)
        m = self.messages(hook)[1]
        self.assertEqual(m["event"], "verify_problem")
        self.assertEqual(m["scope"], "all")
        self.assertEqual((m["counts"]["checked"], m["counts"]["missing"], m["counts"]["ok"]),
                         (3, 1, 2))
        self.assertEqual(len(m["problems"]), 1)
        self.assertEqual(m["problems"][0]["problem"], "missing")
        self.assertEqual(m["problems"][0]["path"], copies[0])
        self.assertEqual(m["problems"][0]["destination"], name)  # as the session names it
        self.assertEqual(m["problems_more"], 0)
        self.assertEqual(m["title"], "SnapSync: verification found 1 problem")
        self.assertEqual(m["dashboard_url"], "http://snapsync.local:8080/")

        # a clean run, or verify_problem left out of notify.events: nothing more
        self.configure("  events: [completed]\n" + self.webhook(hook.url))
        self.snapsync("verify", "--all", check=1)
        self.assertEqual(len(hook.requests), 2)

    def test_the_scrub_finding_a_deleted_copy_sends_verify_problem(self):
        hook = HookServer(self)
        self.cleanups.append(hook.stop)
        self.configure(self.webhook(hook.url))
        self.snapsync("backup", self.card, check=0)
        self.assertEqual(len(hook.requests), 1)
        # copies made 40 days ago, one of them since gone: due for a 30-day scrub
        con = sqlite3.connect(self.db)
        con.execute("UPDATE copies SET verified_at = verified_at - 40 * 86400")
        con.commit()
        con.close()
        self.rate_limit_passed()
        copies = sorted(os.path.join(d, f) for d, _, fs in os.walk(self.dest) for f in fs
                        if f.endswith(".JPG"))
        os.remove(copies[1])
        self.configure(self.webhook(hook.url),
                       backup="  concurrent_files: 2\n  verify_interval_days: 30\n")
        self.start()
        wait_for(lambda: len(hook.requests) >= 2, 60, f"the scrub's notification:\n{self.log()}")
        text = self.stop()
        self.assertRegex(text, r"scrub: verification run \d+ problems")
        self.assertEqual(len(hook.requests), 2, text)
        m = self.messages(hook)[1]
        self.assertEqual((m["event"], m["scope"]), ("verify_problem", "scrub"))
        self.assertEqual((m["counts"]["missing"], m["counts"]["ok"]), (1, 2))
        self.assertEqual([(p["problem"], p["path"]) for p in m["problems"]],
                         [("missing", copies[1])])
        self.assertNotIn(TOKEN, text)

    def test_receiver_down_then_the_service_delivers_once(self):
        port = free_port()
        self.configure(self.webhook(f"http://127.0.0.1:{port}"))
        p = self.snapsync("backup", self.card, "--json", check=0)
        self.assertEqual(json.loads(p.stdout)["status"], "completed")
        self.assertIn("will be retried", p.stderr)
        self.assertEqual([d[1:] for d in self.deliveries()], [("pending", 1)])
        self.assertNotIn(TOKEN, p.stderr)
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)
        self.assertEqual(st["notifications"], {"pending": 1, "failed": []})
        self.assertIn("notifications: 1 waiting", self.snapsync("status", check=0).stdout)

        hook = HookServer(self, port=port)
        self.cleanups.append(hook.stop)
        # the first retry is due a minute after the failure: the test moves it to now
        con = sqlite3.connect(self.db)
        con.execute("UPDATE deliveries SET next_at = 1")
        con.commit()
        con.close()
        self.start()
        wait_for(lambda: " sent on webhook:" in self.log(), 60, "the delivery by the service")
        text = self.stop()  # waits for the delivery's thread, which marks it sent
        self.assertEqual([d[1] for d in self.deliveries()], ["sent"], text)
        self.assertEqual(len(hook.requests), 1, text)
        self.assertEqual(self.messages(hook)[0]["card"], CARD_LABEL)
        self.assertRegex(text, r"notification '.*' sent on webhook:http://127\.0\.0\.1:")
        self.assertNotIn(TOKEN, text)

        # started again: nothing is sent twice
        self.start()
        text = self.stop()
        self.assertEqual(len(hook.requests), 1, text)

    def test_reload_gives_up_a_removed_channel(self):
        self.configure(self.webhook(f"http://127.0.0.1:{free_port()}"))
        self.snapsync("backup", self.card, check=0)
        self.assertEqual([d[1] for d in self.deliveries()], ["pending"])
        self.start()
        hook = HookServer(self)
        self.cleanups.append(hook.stop)
        self.configure(self.webhook(hook.url))
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "1 pending deliveries given up" in self.log(), 30, "the reload")
        text = self.stop()
        self.assertEqual([d[1] for d in self.deliveries()], ["failed"], text)
        self.assertEqual(hook.requests, [])
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)["notifications"]
        self.assertEqual(st["failed"][0]["error"], "the channel is no longer configured")

    def test_refused_delivery_shows_in_status(self):
        hook = HookServer(self)
        self.cleanups.append(hook.stop)
        hook.httpd.reply = (403, f'{{"error": "bad token {TOKEN}"}}'.encode())
        self.configure(self.webhook(hook.url))
        p = self.snapsync("backup", self.card, check=0)
        self.assertIn("given up", p.stderr)
        self.assertNotIn(TOKEN, p.stderr)
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)["notifications"]
        self.assertEqual(st["pending"], 0)
        self.assertEqual(len(st["failed"]), 1, st)
        f = st["failed"][0]
        self.assertEqual((f["event"], f["attempts"]), ("completed", 1))
        self.assertTrue(f["channel"].startswith("webhook:http://127.0.0.1:"))
        self.assertIn("403", f["error"])
        out = self.snapsync("status", check=0).stdout
        self.assertIn("notifications not delivered", out)
        self.assertIn("403", out)
        self.assertNotIn(TOKEN, out + json.dumps(st))

    def test_backup_sends_an_email(self):
        server = SmtpServer(self, mode="starttls", user="ann")
        self.cleanups.append(server.stop)
        self.configure(f"  email:\n    enabled: true\n    host: 127.0.0.1\n    port: {server.port}\n"
                       "    security: starttls\n    username: ann\n"
                       "    from: snapsync@pi.example\n    to: [ann@example.com]\n"
                       f"    tls_ca_file: {server.ca}\n")
        p = self.snapsync("backup", self.card, check=0)
        self.assertNotIn(PASSWORD, p.stdout + p.stderr)
        raw, envelope = server.message()
        self.assertEqual(envelope["rcpt_tos"], ["ann@example.com"])
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertIn(CARD_LABEL, msg["Subject"])
        text = msg.get_body(preferencelist=("plain",)).get_content()
        self.assertIn(CARD_LABEL, text)
        self.assertEqual([d[1] for d in self.deliveries()], ["sent"])
        # the session's report is attached, as the HTML page `snapsync report` makes
        self.assertEqual(msg.get_content_type(), "multipart/mixed")
        [att] = list(msg.iter_attachments())
        self.assertEqual(att.get_content_type(), "text/html")
        self.assertRegex(att.get_filename(), r"^snapsync-session-\d+\.html$")
        page = att.get_content()
        if isinstance(page, bytes):
            page = page.decode()
        self.assertIn(CARD_LABEL, page)
        for i in range(3):
            self.assertIn(f"IMG_{i:04d}.JPG", page)


if __name__ == "__main__":
    unittest.main()
