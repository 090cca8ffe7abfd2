# SPDX-License-Identifier: MIT
"""Home Assistant over MQTT against a real mosquitto broker: discovery, availability, live
progress, faults (broker down, bad credentials, SnapSync killed)."""

import json
import os
import re
import signal
import subprocess

from broker import Broker, Subscriber, make_ca
from harness import SnapsyncTest, make_blob, make_path_beyond_ceiling, make_photo, wait_for, \
    write_config

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                    "home-assistant.md")
ENTITY_ID = r"\b(?:sensor|binary_sensor|button|event)\.snapsync_[a-z0-9_]+\b"
STATUSES = ["idle", "scanning", "backing_up", "verifying", "completed", "partial", "failed",
            "interrupted", "empty"]


def documented_entity_ids():
    """The entity ids of the table under "What appears", and of the example dashboard card."""
    with open(DOCS) as f:
        text = f.read()
    section = text.split("## What appears", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    card = text.split("## A dashboard card", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(ENTITY_ID, table)), set(re.findall(ENTITY_ID, card))


REQUIRED_ENTITIES = {
    "sensor.snapsync_status", "sensor.snapsync_progress", "sensor.snapsync_files",
    "sensor.snapsync_current_file", "binary_sensor.snapsync_card_present",
    "sensor.snapsync_speed", "sensor.snapsync_bytes_copied", "sensor.snapsync_bytes_total",
    "sensor.snapsync_eta", "sensor.snapsync_last_backup", "sensor.snapsync_last_result",
    "button.snapsync_eject", "button.snapsync_retry_failed",
    "binary_sensor.snapsync_unraid_reachable", "sensor.snapsync_last_verification",
    "sensor.snapsync_verification_problems", "binary_sensor.snapsync_verification_problem",
    "event.snapsync_backup_finished",
}
EVENT_TYPES = ["completed", "partial", "failed", "interrupted", "empty"]


class MqttTest(SnapsyncTest):
    def use_broker(self, user=None, password=None, env_password=None, port=None, tls=False,
                   ca=None):
        self.broker = Broker(self.dir, user, password, tls=tls)
        self.cleanups.append(self.broker.stop)
        extra = (f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {port or self.broker.port}\n"
                 f"  discovery_prefix: homeassistant\n  topic_prefix: snapsync\n")
        if tls:
            extra += f"  tls: true\n  tls_ca_file: {ca or self.broker.ca}\n"
        if user:
            extra += f"  username: {user}\n"
            self.env["MQTT_PASSWORD"] = env_password or password
        write_config(self.config, self.dest, self.db, extra)
        self.sub = Subscriber(self.broker, user, password)
        self.cleanups.append(self.sub.stop)

    def discovery(self, check=True):
        msgs = [m for m in self.sub.messages if m[1].startswith("homeassistant/device/")]
        if check:
            self.assertTrue(msgs, "no device discovery message")
        return msgs

    def states(self):
        return [json.loads(m[2]) for m in self.sub.messages
                if m[1].startswith("snapsync/") and m[1].endswith("/state")]

    def test_backup_publishes_discovery_and_progress(self):
        self.use_broker()
        for i in range(6):
            make_photo(f"{self.card}/DCIM/IMG_{i:04d}.JPG", self.dir, "2024:01:02 03:04:05")
        make_blob(f"{self.card}/DCIM/CLIP.MP4", 8 << 20)
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.sub.wait(lambda: any(m[2] == "offline" for m in self.sub.messages
                                  if m[1].endswith("/availability")), 20, "offline at the end")

        # first the entities of destinations not enabled are removed ({"p": ...} only), then
        # the whole device is announced
        first = json.loads(self.discovery()[0][2])
        self.assertEqual(first["components"]["immich_reachable"], {"p": "binary_sensor"})
        topic, payload = self.discovery()[-1][1], self.discovery()[-1][2]
        device_id = topic.split("/")[2]
        self.assertRegex(device_id, r"^[a-zA-Z0-9_-]+$")
        d = json.loads(payload)
        self.assertIn(device_id, d["device"]["identifiers"])
        for key in ("name", "manufacturer", "model", "sw_version"):
            self.assertTrue(d["device"][key], key)
        self.assertEqual(d["origin"]["name"], "snapsync")
        self.assertEqual(d["availability_topic"], f"snapsync/{device_id}/availability")
        self.assertNotIn("~", d)
        entities = {c["default_entity_id"] for c in d["components"].values()}
        self.assertTrue(REQUIRED_ENTITIES <= entities, REQUIRED_ENTITIES - entities)
        uids = [c["unique_id"] for c in d["components"].values()]
        self.assertEqual(len(uids), len(set(uids)))
        for cid, c in d["components"].items():
            self.assertIn(c["p"], ("sensor", "binary_sensor", "button", "event"))
            self.assertTrue(c["default_entity_id"].startswith(c["p"] + "."))
            if c["p"] == "button":
                self.assertTrue(c["command_topic"].startswith(f"snapsync/{device_id}/cmd/"))
            elif c["p"] == "event":  # events have a topic of their own, never retained
                self.assertEqual(c["state_topic"], f"snapsync/{device_id}/event")
            else:  # the verification entities have a topic of their own
                topic = "verification" if "verification" in cid else "state"
                self.assertEqual(c["state_topic"], f"snapsync/{device_id}/{topic}")
            if c.get("device_class") == "enum":
                self.assertNotIn("unit_of_measurement", c)
                self.assertNotIn("state_class", c)
        status = d["components"]["status"]
        self.assertEqual(status["options"], STATUSES)
        self.assertIn("scan_problems", status["json_attributes_template"])
        result = d["components"]["last_result"]
        self.assertEqual(result["options"],
                         ["none", "completed", "empty", "partial", "failed", "interrupted"])

        states = self.states()
        seq = [s["status"] for s in states]
        self.assertEqual(seq[0], "scanning")
        self.assertIn("backing_up", seq)
        self.assertEqual(seq[-1], "completed")
        progress = [s["progress"] for s in states if s["progress"] is not None]
        self.assertEqual(progress, sorted(progress))
        self.assertEqual(progress[-1], 100)
        last = states[-1]
        self.assertEqual(last["files_copied"], 7)
        self.assertEqual(last["files_total"], 7)
        self.assertEqual(last["last_result"], "completed")
        self.assertRegex(last["last_backup"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
        self.assertEqual(last["card_present"], "OFF")
        self.assertEqual(last["unraid_reachable"], "ON")
        avail = [m[2] for m in self.sub.messages if m[1].endswith("/availability")]
        self.assertEqual(avail[0], "online")
        self.assertEqual(avail[-1], "offline")
        # states are retained, so Home Assistant sees the last one after a restart
        late = Subscriber(self.broker)
        self.cleanups.append(late.stop)
        late.wait(lambda: late.find(f"snapsync/{device_id}/state"), 10, "retained state")
        self.assertTrue(late.find(f"snapsync/{device_id}/state")[0][0])

    def events(self, device_id):
        return [m for m in self.sub.messages if m[1] == f"snapsync/{device_id}/event"]

    def test_each_session_fires_one_event_that_is_never_retained(self):
        """The "Backup finished" event entity: one event per finished session, with its result
        as event_type and the session's facts as attributes; not retained, so neither a new
        subscriber (Home Assistant restarting) nor a reconnect fires it again."""
        self.use_broker()
        port = re.search(r"web_ui_port: (\d+)", open(self.config).read()).group(1)
        for i in range(3):
            make_photo(f"{self.card}/DCIM/IMG_{i:04d}.JPG", self.dir, "2024:01:02 03:04:05")
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.sub.wait(lambda: any(m[2] == "offline" for m in self.sub.messages
                                  if m[1].endswith("/availability")), 20, "offline at the end")
        topic = self.discovery()[-1][1]
        device_id = topic.split("/")[2]
        c = json.loads(self.discovery()[-1][2])["components"]["backup_finished"]
        self.assertEqual((c["p"], c["default_entity_id"], c["object_id"], c["unique_id"]),
                         ("event", "event.snapsync_backup_finished", "snapsync_backup_finished",
                          f"{device_id}_backup_finished"))
        self.assertEqual(c["event_types"], EVENT_TYPES)
        self.assertEqual(c["state_topic"], f"snapsync/{device_id}/event")
        self.assertNotIn("value_template", c)  # the payload is the event itself
        [ev] = self.events(device_id)
        e = json.loads(ev[2])
        self.assertEqual(e["event_type"], "completed")
        self.assertEqual((e["session_id"], e["files_copied"], e["files_skipped"],
                          e["files_duplicate"], e["files_failed"], e["files_total"]),
                         (r["session_id"], 3, 0, 0, 0, 3))
        self.assertEqual(e["card"], r["card_label"])
        self.assertGreater(e["bytes_copied"], 0)
        self.assertEqual(e["bytes_copied"], e["bytes_total"])
        self.assertGreaterEqual(e["duration_s"], 0)
        self.assertIs(e["safe_to_remove"], True)
        self.assertEqual(e["dashboard_url"], f"http://127.0.0.1:{port}/")
        # the event comes after the final state, so the sensors already agree with it
        mine = [m for m in self.sub.messages if m[1].startswith(f"snapsync/{device_id}/")]
        final = next(i for i, m in enumerate(mine)
                     if m[1].endswith("/state") and json.loads(m[2])["status"] == "completed")
        self.assertGreater(mine.index(ev), final)

        # the same card again: nothing new, but a session all the same (an event of its own);
        # then an empty card
        self.assertEqual(self.backup()["status"], "completed")
        make_blob(f"{self.dir}/empty/MISC/notes.txt", 100)
        self.assertEqual(self.backup(f"{self.dir}/empty")["status"], "empty")
        self.sub.wait(lambda: len(self.events(device_id)) == 3, 20, "three events")
        seen = [json.loads(m[2]) for m in self.events(device_id)]
        self.assertEqual([x["event_type"] for x in seen], ["completed", "completed", "empty"])
        self.assertEqual((seen[1]["files_copied"], seen[1]["files_skipped"]), (0, 3))
        self.assertEqual(len({x["session_id"] for x in seen}), 3)

        # Home Assistant (re)starting subscribes anew: no retained event is waiting for it
        late = Subscriber(self.broker)
        self.cleanups.append(late.stop)
        self.assertTrue(late.find(f"snapsync/{device_id}/state"))  # retained, as a control
        self.assertEqual(late.find(f"snapsync/{device_id}/event"), [])

    def verifications(self):
        return [json.loads(m[2]) for m in self.sub.messages
                if m[1].startswith("snapsync/") and m[1].endswith("/verification") and m[2]]

    def test_verification_entities_show_a_missing_copy(self):
        """The verification entities read their own retained topic; a client made after
        `snapsync verify` found a copy missing publishes the problem with its path."""
        self.use_broker()
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2024:01:02 03:04:05")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2024:01:02 03:04:06")
        self.assertEqual(self.backup()["status"], "completed")
        self.sub.wait(lambda: self.verifications(), 20, "the verification state (never verified)")
        never = self.verifications()[-1]
        self.assertEqual((never["last_verification"], never["last_status"], never["problem"],
                          never["problems"], never["problem_files"]),
                         (None, "none", "OFF", 0, []))
        d = json.loads(self.discovery()[-1][2])
        device_id = self.discovery()[-1][1].split("/")[2]
        topic = f"snapsync/{device_id}/verification"
        c = d["components"]
        self.assertEqual((c["last_verification"]["device_class"],
                          c["last_verification"]["state_topic"]), ("timestamp", topic))
        self.assertEqual(c["verification_problems"]["state_topic"], topic)
        self.assertEqual(c["verification_problems"]["value_template"],
                         "{{ value_json.problems }}")
        self.assertEqual((c["verification_problem"]["p"], c["verification_problem"]["device_class"],
                          c["verification_problem"]["json_attributes_topic"]),
                         ("binary_sensor", "problem", topic))

        gone = [p for p in self.dest_files() if p.endswith("IMG_0002.JPG")]
        self.assertEqual(len(gone), 1, self.dest_files())
        os.unlink(os.path.join(self.dest, gone[0]))
        self.snapsync("verify", check=1)
        other = os.path.join(self.dir, "card2")
        make_photo(f"{other}/DCIM/IMG_0003.JPG", self.dir, "2024:01:02 03:04:07")
        n = len(self.verifications())
        self.assertEqual(self.backup(other)["status"], "completed")
        self.sub.wait(lambda: len(self.verifications()) > n, 20, "the verification state again")
        v = self.verifications()[-1]
        self.assertEqual((v["last_status"], v["checked"], v["missing"], v["problem"],
                          v["problems"]), ("problems", 2, 1, "ON", 1))
        self.assertRegex(v["last_verification"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
        self.assertEqual(v["problem_files"], [{"card_path": "DCIM/IMG_0002.JPG",
                                               "dest": v["problem_files"][0]["dest"],
                                               "result": "missing"}])
        self.assertTrue(v["problem_files"][0]["dest"].startswith("local:"), v)

    def test_empty_and_unreadable_cards_show_in_home_assistant(self):
        self.use_broker()
        make_blob(f"{self.card}/MISC/notes.txt", 100)
        self.assertEqual(self.backup()["status"], "empty")
        self.sub.wait(lambda: self.states() and self.states()[-1]["last_result"] == "empty", 20,
                      "the empty result")
        last = self.states()[-1]
        self.assertEqual(last["status"], "empty")
        self.assertEqual(last["scan_problems"], 0)
        self.assertIsNone(last["error"])

        make_blob(f"{self.card}/DCIM/IMG_TOP.JPG", 4000)
        name = make_path_beyond_ceiling(self.card)
        self.assertEqual(self.backup(None, 1)["status"], "partial")
        self.sub.wait(lambda: self.states()[-1]["last_result"] == "partial", 20,
                      "the partial result")
        last = self.states()[-1]
        self.assertEqual(last["status"], "partial")  # not "failed": some files are backed up
        self.assertEqual(last["scan_problems"], 1)
        self.assertIn(name[:50], last["error"])
        self.assertIn("path too long", last["error"])

    def test_a_failed_backup_is_failed_with_its_reason(self):
        self.use_broker()
        with open(self.dest, "w") as f:  # the only destination is a file: nothing can be copied
            f.write("not a folder")
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2024:01:02 03:04:05")
        self.assertEqual(self.backup(None, None)["status"], "failed")
        self.sub.wait(lambda: self.states() and self.states()[-1]["last_result"] == "failed", 20,
                      "the failed result")
        last = self.states()[-1]
        self.assertEqual(last["status"], "failed")
        self.assertIn("Not a directory", last["error"])

    def test_a_destination_that_is_down_is_one_state_with_its_reason(self):
        self.use_broker()
        local = os.path.join(self.dir, "local")
        with open(self.config, "a") as f:  # the share is a file: the unraid destination is down
            f.write(f"local:\n  enabled: true\n  path: {local}\n")
        with open(self.dest, "w") as f:
            f.write("not a folder")
        for i in range(3):
            make_photo(f"{self.card}/DCIM/IMG_{i:04d}.JPG", self.dir, "2024:01:02 03:04:05")
        r = self.backup(None, 1)
        self.assertEqual(r["status"], "partial")  # copied to the local folder only
        self.sub.wait(lambda: self.states() and self.states()[-1]["last_result"] == "partial",
                      20, "the partial result")
        last = self.states()[-1]
        self.assertEqual(last["status"], "partial")
        self.assertEqual(last["unraid_reachable"], "OFF")
        self.assertIn("Not a directory", last["unraid_problem"])
        self.assertIn("is down", last["error"])
        # the local folder has no entity of its own: it never overwrites the share's state
        self.assertTrue(all(s["unraid_reachable"] == "OFF" for s in self.states()
                            if "unraid_reachable" in s and s["status"] != "idle"))
        attrs = [json.loads(m[2])["components"]["unraid_reachable"]
                 for m in self.discovery()][-1]
        self.assertIn("unraid_problem", attrs["json_attributes_template"])

    def test_object_store_and_rclone_remote_have_reachability_entities(self):
        """S3 and rclone destinations get a connectivity entity each, like the share: the
        rclone remote (a local folder) is reachable, the S3 server (a closed port) is down with
        its reason."""
        self.use_broker()
        with open(self.config, "a") as f:
            f.write("s3:\n  enabled: true\n  endpoint: http://127.0.0.1:9\n  bucket: photos\n"
                    f"  timeout: 5\nrclone:\n  enabled: true\n  remote: {self.dir}/remote\n")
        self.env.update(S3_ACCESS_KEY_ID="a", S3_SECRET_ACCESS_KEY="s")
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2024:01:02 03:04:05")
        r = self.backup(None, 1)
        self.assertEqual(r["status"], "partial", r)  # on the share and the remote, not in S3
        self.assertTrue(os.path.exists(f"{self.dir}/remote/2024/01/02/IMG_0001.JPG"))
        self.sub.wait(lambda: self.states() and self.states()[-1]["last_result"] == "partial",
                      20, "the partial result")
        last = self.states()[-1]
        self.assertEqual(last["rclone_reachable"], "ON")
        self.assertIsNone(last["rclone_problem"])
        self.assertEqual(last["s3_reachable"], "OFF")
        self.assertIn("127.0.0.1", last["s3_problem"])
        self.assertEqual(last["unraid_reachable"], "ON")
        components = json.loads(self.discovery()[-1][2])["components"]
        for cid in ("s3_reachable", "rclone_reachable"):
            self.assertEqual(components[cid]["device_class"], "connectivity", cid)
            self.assertEqual(components[cid]["default_entity_id"], f"binary_sensor.snapsync_{cid}")
        self.assertEqual(json.loads(self.discovery()[0][2])["components"]["immich_reachable"],
                         {"p": "binary_sensor"})

    def test_entity_ids_are_the_documented_ones_on_every_version(self):
        """object_id (read by Home Assistant 2024.11 to 2026.3) and default_entity_id (2025.10
        and later) give each entity the id docs/home-assistant.md lists."""
        self.use_broker()
        with open(self.config, "a") as f:  # every optional entity: Immich, S3, rclone too
            f.write("immich:\n  enabled: true\n  url: http://127.0.0.1:9\n"
                    "s3:\n  enabled: true\n  endpoint: http://127.0.0.1:9\n  bucket: photos\n"
                    f"rclone:\n  enabled: true\n  remote: {self.dir}/remote\n")
        self.env.update(IMMICH_API_KEY="k", S3_ACCESS_KEY_ID="a", S3_SECRET_ACCESS_KEY="s")
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2024:01:02 03:04:05")
        self.snapsync("backup", self.card, check=None)
        self.sub.wait(lambda: any(m[2] == "offline" for m in self.sub.messages
                                  if m[1].endswith("/availability")), 30, "offline at the end")
        d = json.loads(self.discovery()[-1][2])
        ids = set()
        for cid, c in d["components"].items():
            self.assertRegex(c["object_id"], r"^[a-z0-9_]+$", cid)
            self.assertEqual(c["default_entity_id"], f'{c["p"]}.{c["object_id"]}', cid)
            ids.add(c["default_entity_id"])
        documented, card = documented_entity_ids()
        self.assertEqual(ids, documented)
        self.assertTrue(card and card <= documented, card - documented)

    def test_configuration_url_is_the_dashboard(self):
        self.use_broker()
        port = re.search(r"web_ui_port: (\d+)", open(self.config).read()).group(1)
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2024:01:02 03:04:05")
        self.backup()
        self.assertEqual(json.loads(self.discovery()[-1][2])["device"]["configuration_url"],
                         f"http://127.0.0.1:{port}/")
        # listening on every address: the address this machine reaches the broker from
        with open(self.config) as f:
            text = f.read().replace("web_ui_bind: 127.0.0.1", "web_ui_bind: 0.0.0.0")
        with open(self.config, "w") as f:
            f.write(text)
        n = len(self.discovery())
        self.backup()
        self.sub.wait(lambda: len(self.discovery()) > n, 20, "discovery of the second backup")
        self.assertEqual(json.loads(self.discovery()[-1][2])["device"]["configuration_url"],
                         f"http://127.0.0.1:{port}/")

    def test_interrupted_and_the_last_result_kept_until_a_new_one(self):
        self.use_broker()
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2024:01:02 03:04:05")
        self.assertEqual(self.backup()["status"], "completed")
        self.sub.wait(lambda: self.states() and self.states()[-1]["last_result"] == "completed",
                      20, "the completed result")
        first_end = self.states()[-1]["last_backup"]
        n = len(self.states())
        for i in range(8):
            make_blob(f"{self.card}/DCIM/CLIP{i}.MP4", 16 << 20)
        write_config(self.config, self.dest, self.db,
                     f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {self.broker.port}\n",
                     backup="  concurrent_files: 1\n")
        p = self.start_held_backup()
        self.cleanups.append(lambda: p.poll() is None and (p.kill(), p.wait()))
        p.send_signal(signal.SIGCONT)
        self.sub.wait(lambda: any(s["status"] == "backing_up" for s in self.states()[n:]), 30,
                      "the second backup's progress")
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(timeout=120), 130)
        self.sub.wait(lambda: self.states()[-1]["last_result"] == "interrupted", 20,
                      "the interrupted result")
        second = self.states()[n:]
        running = [s for s in second if s["last_result"] != "interrupted"]
        self.assertTrue(running)
        # while the new backup runs, Home Assistant keeps showing the previous result
        for s in running:
            self.assertEqual(s["last_result"], "completed", s)
            self.assertEqual(s["last_backup"], first_end, s)
        last = second[-1]
        self.assertEqual(last["status"], "interrupted")
        self.assertTrue(last["error"])
        self.assertNotEqual(last["last_backup"], None)

    def test_broker_down_does_not_stop_a_backup(self):
        self.use_broker()
        port = self.broker.port
        self.broker.stop()
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2024:01:02 03:04:05")
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.assertEqual(r["files_copied"], 1)
        p = self.snapsync("test-connection", check=1)
        self.assertRegex(p.stdout, r"FAIL +mqtt: cannot reach broker 127\.0\.0\.1:%d" % port)

    def test_bad_credentials_are_reported(self):
        self.use_broker(user="snap", password="right-pass", env_password="wrong-pass")
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2024:01:02 03:04:05")
        p = self.snapsync("backup", self.card, check=0)
        self.assertIn("mqtt", p.stderr)
        self.assertNotIn("wrong-pass", p.stderr + p.stdout)
        p = self.snapsync("test-connection", check=1)
        self.assertIn("credentials", p.stdout)
        self.assertNotIn("wrong-pass", p.stdout)
        p = self.snapsync("status", check=0)
        self.assertRegex(p.stdout, r"mqtt: FAIL, .*credentials")
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)
        self.assertFalse(st["mqtt"]["ok"])
        self.env["MQTT_PASSWORD"] = "right-pass"
        p = self.snapsync("test-connection", check=0)
        self.assertRegex(p.stdout, r"OK +mqtt")
        self.assertRegex(self.snapsync("status", check=0).stdout, r"mqtt: OK")

    def test_killed_snapsync_goes_offline_and_birth_republishes(self):
        self.use_broker()
        for i in range(40):
            make_blob(f"{self.card}/DCIM/CLIP{i}.MP4", 16 << 20)
        write_config(self.config, self.dest, self.db,
                     f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {self.broker.port}\n",
                     backup="  concurrent_files: 1\n")
        cmd = [os.environ.get("SNAPSYNC_BIN", "snapsync"), "--config", self.config, "backup",
               self.card]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=self.env, cwd=self.dir)
        try:
            self.sub.wait(lambda: any(m[2] == "online" for m in self.sub.messages), 30, "online")
            self.sub.wait(lambda: len(self.discovery(False)) >= 1, 30, "discovery")
            p.send_signal(signal.SIGSTOP)  # hold it mid-backup while Home Assistant comes up
            n = len(self.discovery())
            self.broker.publish("homeassistant/status", "online")
            self.broker.publish(self.discovery()[0][1].replace("homeassistant/device/",
                                                               "snapsync/").replace(
                "/config", "/cmd/eject"), "garbage")
            p.send_signal(signal.SIGCONT)
            self.sub.wait(lambda: len(self.discovery(False)) > n, 30, "discovery again after birth")
        finally:
            p.send_signal(signal.SIGKILL)
            self.assertEqual(p.wait(), -signal.SIGKILL, "the backup ended before the kill")
        self.sub.wait(lambda: [m[2] for m in self.sub.messages
                               if m[1].endswith("/availability")][-1] == "offline",
                      30, "the last will")

    def test_tls_is_verified(self):
        self.use_broker(tls=True)
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2024:01:02 03:04:05")
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.sub.wait(lambda: any(m[1].endswith("/state") and json.loads(m[2])["status"]
                                  == "completed" for m in self.sub.messages), 20, "state over TLS")
        p = self.snapsync("test-connection", check=0)
        self.assertRegex(p.stdout, r"OK +mqtt: .* over TLS")
        # a CA that did not sign the broker's certificate: refused, clearly
        other_ca, _, _ = make_ca(self.dir, "other")
        with open(self.config) as f:
            text = f.read().replace(f"tls_ca_file: {self.broker.ca}", f"tls_ca_file: {other_ca}")
        with open(self.config, "w") as f:
            f.write(text)
        p = self.snapsync("test-connection", check=1)
        self.assertIn("TLS handshake failed", p.stdout)
        # plain MQTT against the TLS port is not silently accepted either
        with open(self.config, "w") as f:
            f.write(text.replace("tls: true", "tls: false"))
        p = self.snapsync("test-connection", check=1)
        self.assertRegex(p.stdout, r"FAIL +mqtt")

    def test_broker_restarted_mid_backup(self):
        self.use_broker()
        for i in range(24):
            make_blob(f"{self.card}/DCIM/CLIP{i}.MP4", 8 << 20)
        write_config(self.config, self.dest, self.db,
                     f"mqtt:\n  enabled: true\n  broker: 127.0.0.1\n  port: {self.broker.port}\n",
                     backup="  concurrent_files: 1\n")
        cmd = [os.environ.get("SNAPSYNC_BIN", "snapsync"), "--config", self.config, "backup",
               self.card, "--json"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=self.env, cwd=self.dir)
        self.sub.wait(lambda: any(m[1].endswith("/state") for m in self.sub.messages), 30,
                      "a first state")
        p.send_signal(signal.SIGSTOP)  # the broker goes away and comes back mid-backup
        self.sub.stop()
        self.broker.restart()
        sub = Subscriber(self.broker)
        self.cleanups.append(sub.stop)
        p.send_signal(signal.SIGCONT)
        out, err = p.communicate(timeout=300)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(json.loads(out)["files_copied"], 24)
        self.assertIn("reconnecting", err)
        # the broker lost everything retained: SnapSync published discovery and state again
        sub.wait(lambda: any(m[1].startswith("homeassistant/device/") for m in sub.messages), 30,
                 "discovery after the restart")
        sub.wait(lambda: any(m[1].endswith("/state") and json.loads(m[2])["status"] == "completed"
                             for m in sub.messages), 30, "the final state after the restart")
