# SPDX-License-Identifier: MIT
"""One status model: `snapsync status --json`, `snapsync sessions --json` and the web API
(`/api/sessions`, `/api/status`) read the same database and must agree field for field, also
about a session whose process was killed mid-copy (SIGKILL: nothing gets to record its end),
which every one of them shows as `interrupted`."""

import json
import signal

from broker import Broker, Subscriber
from harness import SnapsyncTest, make_blob, make_photo, write_config
from webserver import WebServer


class StatusModelTest(SnapsyncTest):
    def cli_json(self, *args):
        return json.loads(self.snapsync(*args, "--json", check=0).stdout)

    def assert_all_agree(self, w):
        cli_sessions = self.cli_json("sessions")
        web_sessions = w.get_json("/api/sessions")
        self.assertEqual(cli_sessions, web_sessions)
        cli_status = self.cli_json("status")
        # the web samples the database once a second: its status may be the one from just
        # before the CLI read (the held backup's last rows); the database then stays as it is,
        # so the next sample must say what the CLI says
        web_status = w.wait_status(lambda st: st["stats"] == cli_status["stats"], 10,
                                   "the web's totals to catch up with the CLI's")
        self.assertEqual(cli_status["state"], web_status["state"])
        self.assertEqual(cli_status["database"], web_status["database"])
        self.assertEqual(cli_status["stats"], web_status["stats"])
        newest = dict(cli_status["session"])
        del newest["scan_problem_entries"]
        del newest["destinations"]
        self.assertEqual(newest, web_sessions[0])
        return cli_sessions, cli_status, web_status

    def kill_mid_copy(self, extra=""):
        """A finished session, then one whose process is killed (SIGKILL) mid-copy."""
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.backup()
        for i in range(4):
            make_blob(f"{self.card}/DCIM/CLIP{i}.MP4", 16 << 20)
        write_config(self.config, self.dest, self.db, extra,
                     backup="  concurrent_files: 1\n  max_retries: 0\n")
        p = self.start_held_backup()
        self.cleanups.append(lambda: p.poll() is None and (p.kill(), p.wait()))
        return p

    def test_home_assistant_reads_a_killed_session_as_interrupted(self):
        broker = Broker(self.dir)
        self.cleanups.append(broker.stop)
        extra = (f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {broker.port}\n"
                 f"  discovery_prefix: homeassistant\n  topic_prefix: snapsync\n")
        p = self.kill_mid_copy()
        p.kill()
        self.assertEqual(p.wait(timeout=30), -signal.SIGKILL)
        died = self.cli_json("sessions")[0]
        self.assertEqual(died["status"], "interrupted")
        # the next backup's first state carries the last result known: the killed session
        write_config(self.config, self.dest, self.db, extra)
        sub = Subscriber(broker)
        self.cleanups.append(sub.stop)
        self.backup()
        states = lambda: [json.loads(m[2]) for m in sub.messages  # noqa: E731
                          if m[1].startswith("snapsync/") and m[1].endswith("/state")]
        sub.wait(lambda: states() and states()[-1]["last_result"] != "interrupted", 30,
                 "the new backup's result")
        first = states()[0]
        self.assertEqual(first["last_result"], "interrupted", first)
        self.assertIsNotNone(first["last_backup"])

    def test_cli_and_web_agree_on_a_running_and_a_killed_session(self):
        w = WebServer(self, ())
        self.cleanups.append(lambda: self.assertEqual(w.stop(), 0))
        p = self.kill_mid_copy()  # held (SIGSTOP) mid-copy: its process still runs it
        w.wait_status(lambda st: st["state"] == "backing_up", 30)
        sessions, st, _ = self.assert_all_agree(w)
        self.assertEqual(st["state"], "backing_up")
        self.assertEqual(sessions[0]["status"], "backing_up")
        self.assertTrue(sessions[0]["running"])
        self.assertEqual(sessions[1]["status"], "completed")
        self.assertFalse(sessions[1]["running"])

        p.kill()  # SIGKILL mid-copy: the row keeps saying backing_up
        self.assertEqual(p.wait(timeout=30), -signal.SIGKILL)
        w.wait_status(lambda st: st["state"] == "idle", 30)
        sessions, st, web = self.assert_all_agree(w)
        self.assertEqual(st["state"], "idle")
        self.assertEqual(web["active"], [])
        self.assertEqual(web["last"]["id"], sessions[0]["id"])
        self.assertEqual(web["last"]["status"], "interrupted")
        died = sessions[0]
        self.assertEqual(died["status"], "interrupted")
        self.assertFalse(died["running"])
        self.assertIsNone(died["ended_at"])
        self.assertEqual(died["error"], "the process running it stopped")
        self.assertEqual(died["files_total"], 5)
        # the human listing says the same
        out = self.snapsync("sessions", check=0).stdout.splitlines()
        self.assertIn("interrupted", out[0])
        self.assertNotIn("backing_up", out[0])
        self.assertIn("state: idle", self.snapsync("status", check=0).stdout)
