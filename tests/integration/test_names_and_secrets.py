# SPDX-License-Identifier: MIT
"""What SnapSync writes for users is valid UTF-8 JSON whatever the bytes of a card's names (the
real bytes stay retrievable in <field>_hex), and a configured secret is never served, whatever
put it in the database."""

import json
import os
import sqlite3
import subprocess

from broker import Broker
from harness import SnapsyncTest, make_path_beyond_ceiling, make_photo, tool, write_config
from webserver import WebServer

SECRET = "planted-mqtt-secret-4711"


def strict_json(data):
    """data (bytes) as JSON, refusing anything that is not UTF-8 (json.loads alone lets lone
    surrogates through)."""
    return json.loads(data.decode("utf-8"))


class NamesTest(SnapsyncTest):
    def test_names_that_are_not_utf8_give_valid_json_with_their_bytes(self):
        card = os.path.join(self.dir, os.fsdecode(b"card\xff"))
        good = b"DCIM/IMG_\xff\xfe.JPG"
        bad = b"DCIM/F\xc3/IMG_\xe9.JPG"  # a sequence cut short, then a lone Latin-1 byte
        make_photo(os.path.join(card, os.fsdecode(good)), self.dir, "2023:07:14 18:30:05")
        make_photo(os.path.join(card, os.fsdecode(bad)), self.dir, "2023:07:16 10:00:00")
        os.makedirs(f"{self.dest}/2023/07")
        with open(f"{self.dest}/2023/07/16", "w") as f:  # in the way: the second photo fails
            f.write("in the way")
        problem_root = os.path.join(card, os.fsdecode(b"X\xff"))
        os.makedirs(problem_root)
        make_path_beyond_ceiling(problem_root)  # an entry the scan cannot read
        broker = Broker(self.dir)
        self.cleanups.append(broker.stop)
        write_config(self.config, self.dest, self.db,
                     f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {broker.port}\n"
                     "  discovery_prefix: homeassistant\n  topic_prefix: snapsync\n")

        r = strict_json(self.run_bytes("backup", card, "--json", check=1).stdout)
        self.assertEqual((r["files_copied"], r["files_failed"]), (1, 1), r)
        self.assertIn("\ufffd", r["card_label"])

        sessions = strict_json(self.run_bytes("sessions", "--json", check=0).stdout)
        self.assertEqual(sessions[0]["source_hex"], os.fsencode(card).hex())
        self.assertEqual(bytes.fromhex(sessions[0]["source_hex"]), os.fsencode(card))
        st = strict_json(self.run_bytes("status", "--json").stdout)["session"]
        self.assertEqual(st["source"], os.fsencode(card).decode("utf-8", "replace"))
        [entry] = st["scan_problem_entries"]
        self.assertTrue(bytes.fromhex(entry["path_hex"]).startswith(b"X\xff/L"), entry)

        w = WebServer(self)
        self.cleanups.append(w.stop)
        st_, _, data = w.request("GET", "/api/files?status=failed")
        self.assertEqual(st_, 200)
        [failed] = strict_json(data)
        self.assertEqual(failed["path"], bad.decode("utf-8", "replace"))
        self.assertEqual(bytes.fromhex(failed["path_hex"]), bad)
        st_, _, data = w.request("GET", f"/api/sessions/{r['session_id']}")
        self.assertEqual(st_, 200)
        d = strict_json(data)
        self.assertEqual(bytes.fromhex(d["source_hex"]), os.fsencode(card))
        names = sorted(bytes.fromhex(f["path_hex"]) for f in d["files"])
        self.assertEqual(names, sorted([good, bad]))
        self.assertTrue(bytes.fromhex(d["scan_problem_entries"][0]["path_hex"]).startswith(b"X\xff/"))
        st_, _, data = w.request("GET", "/api/status")
        self.assertEqual(st_, 200)
        self.assertEqual(bytes.fromhex(strict_json(data)["last"]["source_hex"]), os.fsencode(card))

        # the retained state Home Assistant reads
        p = subprocess.run([tool("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port),
                            "-t", "snapsync/+/state", "-C", "1", "-W", "20"]
                           + broker.client_args(), capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        state = strict_json(p.stdout)
        self.assertIn("\ufffd", state["card_label"])


class SecretsTest(SnapsyncTest):
    def test_a_secret_in_the_database_is_never_served(self):
        write_config(self.config, self.dest, self.db,
                     f"mqtt:\n  enabled: false\n  password: {SECRET}\n")
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:16 10:00:00")
        os.makedirs(f"{self.dest}/2023/07")
        with open(f"{self.dest}/2023/07/16", "w") as f:
            f.write("in the way")
        r = self.backup(None, 1)
        self.assertEqual(r["files_failed"], 1)
        # as a version before the scrub could have left it
        con = sqlite3.connect(self.db)
        try:
            with con:
                n = con.execute("update copies set error = 'denied for " + SECRET + "'").rowcount
                self.assertGreater(n, 0)
                con.execute("update files set last_error = 'key " + SECRET + "'")
                con.execute("update sessions set error = 'key " + SECRET + "'")
        finally:
            con.close()
        w = WebServer(self)
        self.cleanups.append(w.stop)
        for path in ("/api/files?status=failed", f"/api/sessions/{r['session_id']}",
                     "/api/sessions", "/api/status"):
            st, _, data = w.request("GET", path)
            self.assertEqual(st, 200, path)
            self.assertNotIn(SECRET.encode(), data, path)
        st, _, data = w.request("GET", "/api/files?status=failed")
        self.assertIn(b"denied for ***", data)
