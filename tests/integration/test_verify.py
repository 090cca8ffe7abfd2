# SPDX-License-Identifier: MIT
"""`snapsync verify` (docs/verification.md): copies backed up to a folder, an SMB share (real
smbd) and the Immich test server are changed, truncated or deleted behind SnapSync's back, and
verify must name each one (exit 1, text and JSON), pass a clean tree (exit 0), record the run in
the database, and add an ASC MHL generation of checks that validates against the official
schemas."""

import json
import os
import sqlite3
import xml.etree.ElementTree as ET

import smbd
from harness import (TMP_ROOT, ImmichServer, SnapsyncTest, make_blob, make_photo, md5,
                     write_config, xxh128)
from test_history import NS, c4, chain, generations, xmllint
from webserver import WebServer


def check_chain_only(test, dest):
    """The chain validates and names every generation with the C4 of its bytes."""
    history = os.path.join(dest, "ascmhl")
    rc, err = xmllint(os.path.join(history, "ascmhl_chain.xml"), "ASCMHLDirectory.xsd")
    test.assertEqual(rc, 0, err)
    gens = chain(dest)
    test.assertEqual([g[1] for g in gens], generations(dest))
    for _, name, want in gens:
        with open(os.path.join(history, name), "rb") as f:
            test.assertEqual(c4(f.read()), want, name)


class VerifyLocalTest(SnapsyncTest):
    def setUp(self):
        super().setUp()
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2024:05:01 10:00:01",
                   salt=b"2")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0003.JPG", self.dir, "2024:05:01 10:00:02",
                   salt=b"3")
        make_blob(f"{self.card}/DCIM/100CANON/MVI_0004.MOV", 3 << 20)
        self.session = self.backup()["session_id"]
        self.copies = {os.path.basename(p): p for p in self.dest_files()}
        self.assertEqual(len(self.copies), 4, self.copies)

    def path(self, name):
        return os.path.join(self.dest, self.copies[name])

    def verify(self, *args, check=None):
        p = self.snapsync("verify", "--json", *args, check=check)
        return p, json.loads(p.stdout)

    def test_clean_tree_passes_and_is_recorded(self):
        p = self.snapsync("verify", check=0)
        self.assertIn("4 copies checked, 4 ok, 0 missing, 0 changed", p.stdout)
        p, out = self.verify(check=0)
        self.assertEqual(out["status"], "clean")
        self.assertEqual((out["checked"], out["ok"], out["problems"]), (4, 4, []))
        con = sqlite3.connect(self.db)
        runs = con.execute("select scope, status, checked, ok from verify_runs order by id").fetchall()
        self.assertEqual(runs, [("all", "clean", 4, 4), ("all", "clean", 4, 4)])
        results = con.execute("select result, count(*) from verify_results group by result").fetchall()
        self.assertEqual(results, [("ok", 8)])
        self.assertEqual(con.execute("select count(*) from copies where checked_at = 0 "
                                     "or check_result != 'ok'").fetchone()[0], 0)
        con.close()

    def test_a_lost_copy_is_made_again_by_the_next_backup(self):
        os.unlink(self.path("IMG_0002.JPG"))
        truncated = self.path("MVI_0004.MOV")
        os.truncate(truncated, 1000)
        self.snapsync("verify", check=1)
        con = sqlite3.connect(self.db)
        rows = dict(con.execute("select f.rel_path, c.state || ' ' || coalesce(c.error, '') "
                                "from copies c join files f on f.id = c.file_id").fetchall())
        con.close()
        self.assertRegex(rows["DCIM/100CANON/IMG_0002.JPG"],
                         r"^failed verification run \d+ found it missing: no such file$")
        self.assertRegex(rows["DCIM/100CANON/MVI_0004.MOV"], r"^failed .* found it changed")
        # still reported by the next run: a lost copy does not turn clean by being looked at
        _, out = self.verify(check=1)
        self.assertEqual((out["missing"], out["changed"]), (1, 1), out)
        # the card comes back: both are copied again (the changed one beside the bad one,
        # which is never overwritten), and the tree verifies clean
        r = self.backup()
        self.assertEqual((r["files_copied"], r["files_skipped"]), (2, 2), r)
        self.assertTrue(os.path.exists(self.path("IMG_0002.JPG")))
        self.assertEqual(md5(self.path("IMG_0002.JPG")),
                         md5(f"{self.card}/DCIM/100CANON/IMG_0002.JPG"))
        self.assertEqual(os.path.getsize(truncated), 1000)  # left as it was
        # the damaged file is no copy any more: verify names it until the user removes it
        _, out = self.verify(check=1)
        self.assertEqual((out["checked"], out["ok"], out["extra"]), (4, 4, 1), out)
        self.assertEqual([(x["result"], x["path"]) for x in out["problems"]],
                         [("extra", truncated)])
        os.unlink(truncated)
        _, out = self.verify(check=0)
        self.assertEqual((out["checked"], out["ok"], out["extra"]), (4, 4, 0), out)
        history = os.path.join(self.dest, "ascmhl")
        for g in generations(self.dest):
            rc, err = xmllint(os.path.join(history, g), "ASCMHL.xsd")
            self.assertEqual(rc, 0, err)

    def test_a_copy_put_back_by_hand_is_a_copy_again(self):
        with open(self.path("IMG_0003.JPG"), "rb") as f:
            saved = f.read()
        os.unlink(self.path("IMG_0003.JPG"))
        self.snapsync("verify", check=1)
        with open(self.path("IMG_0003.JPG"), "wb") as f:
            f.write(saved)
        _, out = self.verify(check=0)
        self.assertEqual((out["checked"], out["ok"]), (4, 4), out)
        r = self.backup()
        self.assertEqual((r["files_copied"], r["files_skipped"]), (0, 4), r)

    def test_changed_truncated_and_deleted_copies_are_named(self):
        with open(self.path("IMG_0001.JPG"), "r+b") as f:  # same size, other bytes
            f.seek(100)
            f.write(b"\xff\x00\xff")
        os.truncate(self.path("MVI_0004.MOV"), 1000)
        os.unlink(self.path("IMG_0002.JPG"))

        p = self.snapsync("verify", check=1)
        self.assertIn("changed: ", p.stdout)
        for name in ("IMG_0001.JPG", "MVI_0004.MOV", "IMG_0002.JPG"):
            self.assertIn(self.path(name), p.stdout)
        self.assertIn(f"size 1000, recorded {3 << 20}", p.stdout)
        self.assertIn("1 missing, 2 changed", p.stdout)

        p, out = self.verify(check=1)
        self.assertEqual(out["status"], "problems")
        self.assertEqual((out["checked"], out["ok"], out["missing"], out["changed"]), (4, 1, 1, 2))
        got = {os.path.basename(x["path"]): x["result"] for x in out["problems"]}
        self.assertEqual(got, {"IMG_0001.JPG": "changed", "MVI_0004.MOV": "changed",
                               "IMG_0002.JPG": "missing"})
        for x in out["problems"]:
            self.assertTrue(x["dest"].startswith("local:"), x)
            self.assertTrue(x["card_path"].startswith("DCIM/100CANON/"), x)

        con = sqlite3.connect(self.db)
        rows = con.execute("select f.rel_path, r.result, r.detail from verify_results r "
                           "join files f on f.id = r.file_id where r.run_id = 2 "
                           "order by f.rel_path").fetchall()
        con.close()
        self.assertEqual([(r[0], r[1]) for r in rows],
                         [("DCIM/100CANON/IMG_0001.JPG", "changed"),
                          ("DCIM/100CANON/IMG_0002.JPG", "missing"),
                          ("DCIM/100CANON/IMG_0003.JPG", "ok"),
                          ("DCIM/100CANON/MVI_0004.MOV", "changed")])
        # compared by XXH3-128, which every copy hashed since schema 9 has recorded
        self.assertRegex(rows[0][2], r"^XXH3-128 [0-9a-f]{32}, recorded [0-9a-f]{32}$")

    def test_dashboard_api_shows_the_last_run_and_the_open_problems(self):
        w = WebServer(self)
        self.cleanups.append(lambda: self.assertEqual(w.stop(), 0))
        v = w.get_json("/api/verification")
        self.assertEqual((v["last_run"], v["running"], v["problems_total"], v["problems"]),
                         (None, False, 0, []))

        gone = self.path("IMG_0002.JPG")
        with open(gone, "rb") as f:
            kept = f.read()
        os.unlink(gone)
        self.snapsync("verify", check=1)
        v = w.get_json("/api/verification")
        run = v["last_run"]
        self.assertEqual((run["scope"], run["status"], run["running"], run["checked"], run["ok"],
                          run["missing"], run["changed"], run["errors"]),
                         ("all", "problems", False, 4, 3, 1, 0, 0))
        self.assertGreaterEqual(run["ended_at"], run["started_at"])
        self.assertEqual(v["problems_total"], 1)
        self.assertEqual(v["problems_page"], {"offset": 0, "limit": 100, "total": 1})
        (p,) = v["problems"]
        self.assertEqual((p["card_path"], p["path"], p["result"]),
                         ("DCIM/100CANON/IMG_0002.JPG", gone, "missing"))
        self.assertTrue(p["dest"].startswith("local:"), p)
        self.assertTrue(p["detail"], p)
        self.assertGreaterEqual(p["checked_at"], run["started_at"])
        self.assertEqual(w.get_json("/api/verification?offset=1")["problems"], [])
        for bad in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
            w.get_json(f"/api/verification?{bad}", status=400)

        # the copy is back as it was: the next run finds it ok and the problem is closed
        with open(gone, "wb") as f:
            f.write(kept)
        self.snapsync("verify", check=0)
        v = w.get_json("/api/verification")
        self.assertEqual((v["last_run"]["status"], v["problems_total"], v["problems"]),
                         ("clean", 0, []))

    def test_history_gets_a_valid_generation_of_verified_and_failed(self):
        self.assertEqual(len(generations(self.dest)), 1)
        with open(self.path("IMG_0003.JPG"), "ab") as f:
            f.write(b"more")
        os.unlink(self.path("IMG_0002.JPG"))
        self.snapsync("verify", check=1)
        gens = generations(self.dest)
        self.assertEqual(len(gens), 2)
        gen = os.path.join(self.dest, "ascmhl", gens[1])
        rc, err = xmllint(gen, "ASCMHL.xsd")
        self.assertEqual(rc, 0, err)
        check_chain_only(self, self.dest)
        root = ET.parse(gen).getroot()
        self.assertEqual(root.find("m:processinfo/m:process", NS).text, "in-place")
        actions = {}
        for h in root.findall("m:hashes/m:hash", NS):
            p = h.find("m:path", NS)
            m = h.find("m:xxh128", NS)
            # checked by XXH3-128 alone: only what was computed again is listed as verified
            self.assertIsNone(h.find("m:sha1", NS))
            self.assertIsNone(h.find("m:md5", NS))
            actions[os.path.basename(p.text)] = (m.get("action"), int(p.get("size")), m.text)
        # the missing file has nothing to hash: not listed; the changed one with what was found
        self.assertEqual(set(actions), {"IMG_0001.JPG", "IMG_0003.JPG", "MVI_0004.MOV"})
        self.assertEqual(actions["IMG_0001.JPG"][0], "verified")
        self.assertEqual(actions["MVI_0004.MOV"][0], "verified")
        p3 = self.path("IMG_0003.JPG")
        self.assertEqual(actions["IMG_0003.JPG"],
                         ("failed", os.path.getsize(p3), xxh128(p3)))

    def test_scope_session_dest_and_usage_errors(self):
        os.unlink(self.path("IMG_0002.JPG"))
        p, out = self.verify("--session", str(self.session + 1), check=0)
        self.assertEqual(out["checked"], 0)
        p, out = self.verify("--session", str(self.session), "--dest", "unraid", check=1)
        self.assertEqual(out["missing"], 1)
        p, out = self.verify("--since", "2999-01-01", check=0)
        self.assertEqual(out["checked"], 0)
        p = self.snapsync("verify", "--dest", "nowhere", check=2)
        self.assertIn("nowhere", p.stderr)
        self.snapsync("verify", "--session", "x", check=2)
        self.snapsync("verify", "--all", "--session", "1", check=2)
        self.snapsync("verify", "--rate", "0", check=2)
        self.snapsync("verify", "--since", "yesterday", check=2)

    def test_extra_files_are_named_and_clutter_and_own_files_are_not(self):
        day = os.path.dirname(self.path("IMG_0001.JPG"))
        stray = os.path.join(day, "edited.jpg")
        with open(stray, "wb") as f:
            f.write(b"someone else's")
        os.makedirs(os.path.join(self.dest, "other", "deep"))
        deep = os.path.join(self.dest, "other", "deep", "x.bin")
        with open(deep, "wb") as f:
            f.write(b"x")
        link = os.path.join(day, "link.jpg")
        os.symlink("/etc/passwd", link)
        # not reported: what file browsers and NAS systems leave, SnapSync's own folders
        for junk in (".DS_Store", "._IMG_0001.JPG", "Thumbs.db"):
            with open(os.path.join(day, junk), "wb") as f:
                f.write(b"junk")
        os.makedirs(os.path.join(day, "@eaDir", "IMG_0001.JPG"))
        with open(os.path.join(day, "@eaDir", "IMG_0001.JPG", "SYNOPHOTO_THUMB_S.jpg"), "wb") as f:
            f.write(b"thumb")
        os.makedirs(os.path.join(self.dest, ".snapsync-tmp"), exist_ok=True)
        with open(os.path.join(self.dest, ".snapsync-tmp", "1.2.host.part"), "wb") as f:
            f.write(b"tmp")
        self.assertTrue(os.listdir(os.path.join(self.dest, "ascmhl")))

        p = self.snapsync("verify", check=1)
        self.assertIn("4 ok, 0 missing, 0 changed", p.stdout)
        self.assertIn("3 extra files", p.stdout)
        for path in (stray, deep, link):
            self.assertIn(f"extra: local {self.dest} {path}: no copy or sidecar", p.stdout)
        self.assertNotIn("junk", p.stdout)
        p, out = self.verify(check=1)
        self.assertEqual((out["status"], out["checked"], out["ok"], out["extra"]),
                         ("problems", 4, 4, 3), out)
        self.assertEqual(sorted(x["path"] for x in out["problems"]), sorted([stray, deep, link]))
        for x in out["problems"]:
            self.assertEqual((x["result"], x["card_path"], x["file_id"]), ("extra", None, None))
        con = sqlite3.connect(self.db)
        run = con.execute("select id, extra, status from verify_runs order by id desc").fetchone()
        named = con.execute("select remote from verify_extras where run_id = ? order by remote",
                            (run[0],)).fetchall()
        con.close()
        self.assertEqual(run[1:], (3, "problems"))
        self.assertEqual([r[0] for r in named], sorted([stray, deep, link]))
        # a narrower scope does not look for them: its copies are not the whole tree
        _, out = self.verify("--session", str(self.session), check=0)
        self.assertEqual(out["extra"], 0)
        for path in (stray, deep, link):
            os.unlink(path)
        _, out = self.verify(check=0)
        self.assertEqual((out["status"], out["extra"]), ("clean", 0))

    def test_a_killed_run_is_not_shown_running(self):
        con = sqlite3.connect(self.db)
        # a run whose process died: recorded running, by a pid that is no process (or one
        # that started long after)
        con.execute("insert into verify_runs (started_at, scope, status, pid) "
                    "values (strftime('%s','now') - 100, 'all', 'running', 2147483647)")
        con.commit()
        con.close()
        w = WebServer(self)
        self.cleanups.append(lambda: self.assertEqual(w.stop(), 0))
        v = w.get_json("/api/verification")
        self.assertEqual((v["last_run"]["status"], v["last_run"]["running"], v["running"]),
                         ("interrupted", False, False), v)
        self.verify(check=0)
        con = sqlite3.connect(self.db)
        runs = con.execute("select status, pid > 0 from verify_runs order by id").fetchall()
        con.close()
        self.assertEqual(runs, [("interrupted", 1), ("clean", 1)])

    def test_rate_limits_the_reading(self):
        p, out = self.verify("--rate", "2", check=0)
        # ~3.3 MB at 2 MB/s cannot take much less than 1.5 s
        self.assertGreater(out["bytes_read"], 3 << 20)
        self.assertGreaterEqual(out["duration_s"], out["bytes_read"] / 2e6 - 0.2)


class VerifySmbTest(SnapsyncTest):
    """An SMB share of a real smbd (smbd.py; needs root, as CI runs as root)."""

    server = None

    @classmethod
    def setUpClass(cls):
        os.makedirs(TMP_ROOT, exist_ok=True)
        cls.server = smbd.Smbd(TMP_ROOT)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            if os.environ.get("SNAPSYNC_KEEP_TMP"):
                cls.server.stop()
            else:
                cls.server.cleanup()

    def setUp(self):
        super().setUp()
        self.env["UNRAID_USERNAME"] = smbd.USER
        self.env["UNRAID_PASSWORD"] = smbd.PASSWORD
        with open(self.config, "w") as f:
            f.write(f"""service:
  database_path: {self.db}
  log_level: info
unraid:
  enabled: true
  protocol: smb
  host: 127.0.0.1:{self.server.port}
  share: photos
  path: verify/{self._testMethodName}
  organize_by_date: true
backup:
  concurrent_files: 2
  max_retries: 1
  retry_delay: 0.1
  destination_wait: 0
""")
        os.chmod(self.config, 0o600)
        self.root = os.path.join(self.server.share_dir("photos"), "verify", self._testMethodName)

    def copy_on_share(self, name):
        for r, dirs, files in os.walk(self.root):
            if name in files:
                return os.path.join(r, name)
        self.fail(f"{name} is not on the share")

    def test_changed_and_deleted_files_on_the_share_are_found(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        make_blob(f"{self.card}/DCIM/100CANON/CLIP_0003.MP4", 3 << 20)  # several chunks
        self.backup()
        p = self.snapsync("verify", "--json", check=0)
        out = json.loads(p.stdout)
        self.assertEqual((out["checked"], out["ok"], out["bytes_read"] > 3 << 20),
                         (3, 3, True), out)
        self.assertNotIn(smbd.PASSWORD, p.stdout + p.stderr)

        clip = self.copy_on_share("CLIP_0003.MP4")
        with open(clip, "r+b") as f:
            f.seek(2 << 20)
            f.write(b"bit rot")
        os.unlink(self.copy_on_share("IMG_0002.JPG"))
        p = self.snapsync("verify", "--json", check=1)
        self.assertNotIn(smbd.PASSWORD, p.stdout + p.stderr)
        out = json.loads(p.stdout)
        got = {x["path"].rsplit("/", 1)[1]: (x["result"], x["path"]) for x in out["problems"]}
        self.assertEqual({k: v[0] for k, v in got.items()},
                         {"CLIP_0003.MP4": "changed", "IMG_0002.JPG": "missing"})
        self.assertTrue(got["CLIP_0003.MP4"][1].startswith("smb://"), got)
        # the share's history got a valid generation: the changed clip failed, the photo verified
        gens = generations(self.root)
        self.assertEqual(len(gens), 3)  # the backup's, then one per verify run
        rc, err = xmllint(os.path.join(self.root, "ascmhl", gens[2]), "ASCMHL.xsd")
        self.assertEqual(rc, 0, err)
        check_chain_only(self, self.root)
        root = ET.parse(os.path.join(self.root, "ascmhl", gens[2])).getroot()
        actions = {os.path.basename(h.find("m:path", NS).text): h.find("m:xxh128", NS).get("action")
                   for h in root.findall("m:hashes/m:hash", NS)}
        self.assertEqual(actions, {"CLIP_0003.MP4": "failed", "IMG_0001.JPG": "verified"})
        # a file put on the share by someone else is named, the share's own folders are not
        os.makedirs(os.path.join(self.root, "2023", "extra"))
        with open(os.path.join(self.root, "2023", "extra", "stray.jpg"), "wb") as f:
            f.write(b"stray")
        with open(os.path.join(self.root, ".DS_Store"), "wb") as f:
            f.write(b"junk")
        p = self.snapsync("verify", "--json", check=1)
        out = json.loads(p.stdout)
        extra = [x["path"] for x in out["problems"] if x["result"] == "extra"]
        self.assertEqual(len(extra), 1, out)
        self.assertTrue(extra[0].startswith("smb://") and
                        extra[0].endswith(f"/photos/verify/{self._testMethodName}/2023/extra/stray.jpg"),
                        extra)
        self.assertEqual(out["extra"], 1)


class VerifyImmichTest(SnapsyncTest):
    """The Immich test server (tests/immich/server.py), which checks every request against the
    official OpenAPI spec."""

    KEY = "sk-verify-0123456789abcdef"

    def setUp(self):
        super().setUp()
        self.server = ImmichServer(self.dir, api_key=self.KEY)
        self.cleanups.append(self.server.stop)
        self.env["IMMICH_API_KEY"] = self.KEY
        write_config(self.config, self.dest, self.db,
                     extra=f"immich:\n  enabled: true\n  url: {self.server.url}\n  timeout: 5\n")

    def tearDown(self):
        try:
            if getattr(self._outcome, "success", True) and self.server.proc.poll() is None:
                self.assertEqual(self.server.state()["errors"], [],
                                 "the Immich test server saw invalid requests")
        finally:
            super().tearDown()

    def test_an_asset_deleted_or_trashed_on_the_server_is_found(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0003.JPG", self.dir, "2023:07:16 09:00:00")
        self.backup()
        p = self.snapsync("verify", "--dest", "immich", "--json", check=0)
        out = json.loads(p.stdout)
        self.assertEqual((out["checked"], out["ok"]), (3, 3), out)
        self.assertNotIn(self.KEY, p.stdout + p.stderr)

        assets = {a["originalFileName"]: a["id"] for a in self.server.state()["assets"]}
        self.server.configure(delete=[assets["IMG_0002.JPG"]], trash=[assets["IMG_0003.JPG"]])
        p = self.snapsync("verify", "--json", check=1)
        self.assertNotIn(self.KEY, p.stdout + p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual((out["checked"], out["ok"], out["missing"]), (6, 4, 2), out)
        got = {x["path"]: (x["result"], x["detail"], x["card_path"]) for x in out["problems"]}
        self.assertEqual(got, {
            assets["IMG_0002.JPG"]: ("missing", "not on the server", "DCIM/100CANON/IMG_0002.JPG"),
            assets["IMG_0003.JPG"]: ("missing", "in the server's trash",
                                     "DCIM/100CANON/IMG_0003.JPG")})
        for x in out["problems"]:
            self.assertTrue(x["dest"].startswith("immich:"), x)
        p = self.snapsync("verify", check=1)
        self.assertIn(f"missing: immich {self.server.url}/api {assets['IMG_0002.JPG']}", p.stdout)
        # Immich's library is its user's: a deleted asset is reported, not uploaded again (the
        # copies at the folder destination are unaffected either way)
        con = sqlite3.connect(self.db)
        self.assertEqual(con.execute("select count(*) from copies where state != 'completed'")
                         .fetchone()[0], 0)
        con.close()
        r = self.backup()
        self.assertEqual((r["files_copied"], r["files_skipped"]), (0, 3), r)

    def test_a_server_that_is_down_is_no_verdict_and_not_asked_for_every_copy(self):
        for i in range(5):
            make_photo(f"{self.card}/DCIM/100CANON/IMG_000{i}.JPG", self.dir,
                       f"2023:07:1{i} 18:30:05")
        self.backup()
        self.server.stop()
        p = self.snapsync("verify", "--dest", "immich", "--json", check=1)
        out = json.loads(p.stdout)
        self.assertEqual((out["checked"], out["errors"], out["missing"]), (5, 5, 0), out)
        details = [x["detail"] for x in out["problems"]]
        self.assertTrue(all(x["result"] == "error" for x in out["problems"]), out)
        self.assertEqual(sum(d.startswith("not tried: 3 checks in a row failed") for d in details),
                         2, details)
        con = sqlite3.connect(self.db)  # no verdict: the copies are still never checked
        self.assertEqual(con.execute("select count(*) from copies where dest like 'immich:%' "
                                     "and checked_at = 0").fetchone()[0], 5)
        con.close()
