# SPDX-License-Identifier: MIT
"""The Immich destination against tests/immich/server.py, which checks every request against the
official OpenAPI spec. Every test runs against a 3.x and a 2.x server (ImmichV3Test,
ImmichV2Test) and ends by asserting that the server saw no invalid request."""

import json
import os
import resource
import sqlite3
import subprocess

from broker import make_ca
from webserver import WebServer
from harness import (ImmichServer, SnapsyncTest, free_port, make_blob, make_photo, make_video,
                     sha1, tool, wait_for, write_config)

KEY = "sk-SECRET-0123456789abcdef"


class ImmichBase:
    VERSION = "3.1.0"

    def setUp(self):
        super().setUp()
        self.server = ImmichServer(self.dir, version=self.VERSION, api_key=KEY)
        self.cleanups.append(self.server.stop)
        self.env["IMMICH_API_KEY"] = KEY
        self.configure()

    def configure(self, immich="", backup=None, local=True, db=None, url=None, timeout=5):
        extra = (f"immich:\n  enabled: true\n  url: {url or self.server.url}\n"
                 f"  timeout: {timeout}\n{immich}")
        write_config(self.config, self.dest, db or self.db, extra=extra, backup=backup)
        if not local:
            with open(self.config) as f:
                text = f.read()
            with open(self.config, "w") as f:
                f.write(text.replace("unraid:\n  enabled: true", "unraid:\n  enabled: false"))

    def snapsync(self, *args, **kw):
        p = super().snapsync(*args, **kw)
        self.assertNotIn(KEY, p.stdout)
        self.assertNotIn(KEY, p.stderr)
        return p

    def tearDown(self):
        try:
            if getattr(self._outcome, "success", True) and self.server.proc.poll() is None:
                errors = self.server.state()["errors"]
                self.assertEqual(errors, [], "the Immich test server saw invalid requests")
        finally:
            super().tearDown()

    def assert_immich_copies_wait(self):
        """A destination refused at the start of a session is down: its copies stay pending (the
        next run does them); how the session counts that is the engine's business."""
        con = sqlite3.connect(self.db)
        states = [x[0] for x in con.execute(
            "select state from copies where dest like 'immich:%'")]
        con.close()
        self.assertTrue(states and all(x == "pending" for x in states), states)

    def uploads(self, state=None):
        state = state or self.server.state()
        return [r for r in state["requests"] if r["op"] == "uploadAsset"]

    def assets_by_sha1(self):
        return {a["sha1"]: a for a in self.server.state()["assets"]}

    def make_card(self, card=None):
        c = card or self.card
        make_photo(f"{c}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{c}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        with open(f"{c}/DCIM/100CANON/IMG_0002.xmp", "w") as f:
            f.write('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>')
        make_photo(f"{c}/DCIM/100CANON/NODATE.JPG", self.dir, None)
        make_video(f"{c}/DCIM/100CANON/MVI_0003.MP4", self.dir)
        return ["DCIM/100CANON/IMG_0001.JPG", "DCIM/100CANON/IMG_0002.JPG",
                "DCIM/100CANON/NODATE.JPG", "DCIM/100CANON/MVI_0003.MP4"]

    # ---- tests ----

    def test_full_card_to_immich_and_local_then_rerun_uploads_nothing(self):
        files = self.make_card()
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 4)
        st = self.server.state()
        assets = {a["sha1"]: a for a in st["assets"]}
        for rel in files:
            a = assets[sha1(f"{self.card}/{rel}")]  # byte-identical: SHA-1, MD5 and size
            self.assertEqual(a["size"], os.path.getsize(f"{self.card}/{rel}"))
            self.assertEqual(a["originalFileName"], os.path.basename(rel))
        # Immich needs SHA-1, so the card's reader computed it and the database records it
        con = sqlite3.connect(self.db)
        rows = con.execute("select rel_path, sha1, xxh128 from files").fetchall()
        con.close()
        self.assertEqual(sorted(r[0] for r in rows), sorted(files))
        for rel, sha1hex, xxh in rows:
            self.assertEqual(sha1hex, sha1(f"{self.card}/{rel}"))
            self.assertRegex(xxh, r"^[0-9a-f]{32}$")
        ups = self.uploads(st)
        self.assertEqual(len(ups), 4)
        for u in ups:
            self.assertEqual(u["headers"]["content-length"], str(
                int(u["headers"]["content-length"])))  # a Content-Length, never chunked
            self.assertTrue(u["has_api_key"])
            self.assertNotIn("x-immich-checksum", u["headers"])  # hash unknown before the read
            if self.VERSION.startswith("2."):
                self.assertIn("deviceAssetId", u["fields"])
                self.assertIn("deviceId", u["fields"])
            else:
                self.assertNotIn("deviceAssetId", u["fields"])
                self.assertNotIn("deviceId", u["fields"])
            if u["fields"]["filename"] == "MVI_0003.MP4":
                self.assertEqual(u["fields"]["duration"],
                                 "0" if self.VERSION.startswith("3.") else "0:00:00.000000")
            if u["fields"]["filename"] == "IMG_0001.JPG":
                self.assertTrue(u["fields"]["fileCreatedAt"].startswith("2023-07-14T18:30:05"))
        # the sidecar went up with its photo
        img2 = assets[sha1(f"{self.card}/DCIM/100CANON/IMG_0002.JPG")]
        self.assertEqual(img2["sidecar"], sha1(f"{self.card}/DCIM/100CANON/IMG_0002.xmp"))
        # every asset was verified by a GET, the default album mode is one album per day
        gets = [q for q in st["requests"] if q["op"] == "getAssetInfo"]
        self.assertEqual(len(gets), 4)
        albums = {a["name"]: a["assets"] for a in st["albums"]}
        self.assertIn("2023-07-14", albums)
        self.assertEqual(sum(len(v) for v in albums.values()), 4)
        # the local copies are there too, IMG_0002.xmp next to its photo
        local = [p for p in self.dest_files() if not p.startswith(".")]
        self.assertEqual(len(local), 5)
        self.assertEqual(len([p for p in local if p.endswith("/IMG_0002.xmp")]), 1)
        con = sqlite3.connect(self.db)
        remotes = [x[0] for x in con.execute(
            "select remote from copies where dest like 'immich:%' and state = 'completed'")]
        self.assertEqual(sorted(remotes), sorted(a["id"] for a in st["assets"]))

        r2 = self.backup()
        self.assertEqual(r2["files_copied"], 0)
        self.assertEqual(r2["files_skipped"], 4)
        self.assertEqual(len(self.uploads()), 4)

    def test_dry_run_sends_the_xmp_alone_with_its_photo(self):
        self.make_card()
        with open(f"{self.card}/DCIM/100CANON/IMG_0002.WAV", "wb") as f:
            f.write(b"RIFF memo")
        r = self.backup(None, 0, "--dry-run")
        photo = {f["path"]: f for f in r["files"]}["DCIM/100CANON/IMG_0002.JPG"]
        xmp, wav = "DCIM/100CANON/IMG_0002.xmp", "DCIM/100CANON/IMG_0002.WAV"
        self.assertEqual(photo["sidecars"], [xmp, wav])
        local, immich = sorted(photo["targets"], key=lambda t: not t["where"].startswith("/"))
        self.assertEqual(local["sidecars"],
                         [{"path": xmp, "where": f"{self.dest}/2023/07/15/IMG_0002.xmp"},
                          {"path": wav, "where": f"{self.dest}/2023/07/15/IMG_0002.WAV"}])
        self.assertEqual(immich["sidecars"], [{"path": xmp, "where": immich["where"]}])
        self.assertEqual(self.uploads(), [])

    def test_duplicate_content_from_another_card_is_not_sent_again(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05", b"same")
        self.backup()
        other = os.path.join(self.dir, "card2")
        make_photo(f"{other}/DCIM/COPY.JPG", self.dir, "2023:07:14 18:30:05", b"same")
        r = self.backup(other)
        self.assertEqual(r["files_duplicate"], 1)
        # The hash of a file read for the first time is known only at the end of its read, while
        # its upload streams: a small file may already be sent, and Immich then answers
        # duplicate. Nothing is stored twice either way.
        ups = self.uploads()
        self.assertEqual(ups[0]["result"], "created")
        self.assertTrue(all(u.get("result") != "created" for u in ups[1:]), ups)
        self.assertEqual(len(self.server.state()["assets"]), 1)
        # a third card with that content: its hash is known now, nothing is read or sent
        r = self.backup(other)
        self.assertEqual(r["files_skipped"], 1)
        self.assertEqual(len(self.uploads()), len(ups))

    def test_known_hash_goes_through_bulk_check(self):
        make_blob(f"{self.card}/DCIM/BIG.MP4", 3 << 20)
        self.configure(backup="  max_retries: 0\n  retry_delay: 0.1\n")
        # the first run hashes the file, then the upload fails after its body
        self.server.faults({"op": "uploadAsset", "action": "status_after_body", "status": 500})
        r = self.backup(check=1)
        self.assertEqual(r["files_failed"], 1)
        self.assertIn("HTTP 500", r["error"])
        r = self.backup()
        self.assertEqual(r["files_copied"], 1)
        st = self.server.state()
        checks = [q for q in st["requests"] if q["op"] == "checkBulkUpload"]
        self.assertEqual(len(checks), 1)
        self.assertEqual(checks[0]["fields"], {"n": 1})
        last = self.uploads(st)[-1]
        self.assertEqual(last["headers"]["x-immich-checksum"], sha1(f"{self.card}/DCIM/BIG.MP4"))
        self.assertEqual(last["result"], "created")

    def duplicate_before_body(self, dup_close):
        """Immich has the content, SnapSync knows the hash but its bulk check fails: the upload
        carries x-immich-checksum and the server answers duplicate without reading the body."""
        make_blob(f"{self.card}/DCIM/BIG.MP4", 8 << 20)
        other_db = os.path.join(self.dir, "other.db")
        self.configure(db=other_db, local=False)
        self.backup()  # Immich has it now, this database does not know
        self.configure(backup="  max_retries: 0\n  retry_delay: 0.1\n")
        self.server.faults({"op": "uploadAsset", "action": "status_after_body", "status": 503})
        self.backup(check=1)  # hashed, not completed at Immich
        self.server.configure(dup_close=dup_close)
        self.server.faults({"op": "checkBulkUpload", "action": "status", "status": 500})
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        ups = self.uploads()
        self.assertTrue(ups[-1].get("early_duplicate"), ups[-1])
        self.assertEqual(len(self.server.state()["assets"]), 1)

    def test_checksum_header_duplicate_answered_before_the_body(self):
        self.duplicate_before_body(dup_close=False)

    def test_connection_reset_after_duplicate_reply_is_a_duplicate(self):
        self.duplicate_before_body(dup_close=True)

    def test_verification_mismatch_fails_then_next_run_completes(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.configure(backup="  max_retries: 0\n  retry_delay: 0.1\n")
        self.server.faults({"op": "getAssetInfo", "action": "wrong_checksum"})
        r = self.backup(check=1)
        self.assertIn("checksum", r["error"])
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.assertEqual(len(self.server.state()["assets"]), 1)

    def test_server_errors_and_429_are_retried(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.configure(backup="  max_retries: 4\n  retry_delay: 0.1\n")
        self.server.faults({"op": "uploadAsset", "action": "status", "status": 500},
                           {"op": "uploadAsset", "action": "status", "status": 429,
                            "retry_after": 1},
                           {"op": "uploadAsset", "action": "malformed"},
                           {"op": "uploadAsset", "action": "reset", "at": 1000})
        p = self.snapsync("backup", self.card, "--json", check=0)
        self.assertEqual(json.loads(p.stdout)["status"], "completed")
        self.assertIn("HTTP 500", p.stderr)
        self.assertIn("retry after 1 s", p.stderr)
        self.assertIn("will retry", p.stderr)
        self.assertEqual(len(self.server.state()["assets"]), 1)

    def test_stalled_upload_times_out_and_is_retried(self):
        make_blob(f"{self.card}/DCIM/BIG.MP4", 4 << 20)
        # a stall takes the destination down; it answers the next probe and the file is sent
        self.configure(timeout=1, backup="  max_retries: 2\n  retry_delay: 0.1\n"
                                         "  destination_wait: 60\n")
        self.server.faults({"op": "uploadAsset", "action": "stall", "at": 1 << 20,
                            "seconds": 3})
        p = self.snapsync("backup", self.card, "--json", check=0)
        self.assertEqual(json.loads(p.stdout)["status"], "completed")
        self.assertIn("no progress for 1 s", p.stderr)
        self.assertIn("destination down", p.stderr)
        self.assertIn("destination back", p.stderr)

    def test_slow_upload_outlasting_the_timeout_completes(self):
        # immich.timeout is a stall timeout, not a total one: a body that takes three times the
        # timeout to arrive, but never stops moving, is one upload, not a retry
        make_blob(f"{self.card}/DCIM/LONG.MP4", 3 << 20)
        self.configure(timeout=1, backup="  max_retries: 0\n")
        self.server.faults({"op": "uploadAsset", "action": "slow", "at": 0, "rate": 1 << 20})
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.assertEqual(len(self.uploads()), 1)
        self.assertEqual(len(self.server.state()["assets"]), 1)

    def test_wrong_key_and_missing_permission_are_clear(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.env["IMMICH_API_KEY"] = "wrong-key"
        p = self.snapsync("test-connection", check=1)
        self.assertIn("FAIL  immich", p.stdout)
        self.assertIn("API key was refused", p.stdout)
        r = self.backup(check=None)
        self.assertIn("API key was refused", r["error"])
        self.assert_immich_copies_wait()
        self.assertEqual(self.uploads(), [])
        self.env["IMMICH_API_KEY"] = KEY
        self.server.configure(permissions=["asset.upload", "album.read"])
        p = self.snapsync("test-connection", check=1)
        self.assertIn("lacks the permissions asset.read, album.create, albumAsset.create",
                      p.stdout)
        self.server.configure(permissions=["asset.upload", "asset.read"])
        self.configure(immich="  album_mode: none\n")
        p = self.snapsync("test-connection", check=0)
        self.assertRegex(p.stdout, r"OK    immich: http://127\.0\.0\.1:\d+/api: Immich "
                         + self.VERSION.replace(".", r"\.") + r", API key 'snapsync' may upload")
        self.assertEqual(self.backup()["status"], "completed")

    def test_a_key_echoed_by_the_server_is_never_logged_stored_or_served(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.configure(backup="  max_retries: 0\n")
        self.server.faults({"op": "uploadAsset", "action": "status", "status": 401,
                            "message": "Invalid API key", "echo_key": True, "times": 5})
        p = self.snapsync("backup", self.card, "--json", check=None)
        self.assertIn("Invalid API key ***", p.stdout + p.stderr)
        self.assertNotIn(KEY, p.stdout + p.stderr)
        with open(self.db, "rb") as f:
            self.assertNotIn(KEY.encode(), f.read())
        w = WebServer(self)
        try:
            st, _, data = w.request("GET", "/api/files?status=failed")
            self.assertEqual(st, 200)
            self.assertIn(b"Invalid API key ***", data)
            self.assertNotIn(KEY.encode(), data)
        finally:
            w.stop()

    def test_a_secret_is_never_logged_even_at_debug_level(self):
        # echoed by the server, and also in a file name (which no destination error scrubs:
        # the log itself does)
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/{KEY}.JPG", self.dir, "2023:07:14 18:30:06", salt=b"k")
        self.configure(backup="  max_retries: 0\n")
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace("log_level: info", "log_level: debug"))
        self.server.faults({"op": "uploadAsset", "action": "status", "status": 401,
                            "message": "Invalid API key", "echo_key": True, "times": 5})
        p = super().snapsync("backup", self.card, check=1)
        self.assertIn("debug: ", p.stderr)  # the level took effect
        self.assertIn("Invalid API key ***", p.stderr)
        self.assertIn("DCIM/***.JPG", p.stderr)
        self.assertNotIn(KEY, p.stdout + p.stderr)

    def test_forbidden_upload_is_not_retried(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.configure(backup="  max_retries: 3\n  retry_delay: 0.1\n")
        self.server.faults({"op": "uploadAsset", "action": "status", "status": 403,
                            "message": "Missing required permission: asset.upload", "times": 5})
        r = self.backup(check=1)
        self.assertIn("HTTP 403 Missing required permission: asset.upload", r["error"])
        self.assertEqual(len(self.uploads()), 1)

    def test_old_server_is_refused(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.server.configure(version="1.140.0")
        p = self.snapsync("test-connection", check=1)
        self.assertIn("Immich 1.140.0 is older than 2.0.0", p.stdout)
        r = self.backup(check=None)
        self.assertIn("older than 2.0.0", r["error"])
        self.assert_immich_copies_wait()
        # the local copy was still made
        self.assertEqual(len([p for p in self.dest_files() if not p.startswith(".")]), 1)

    def test_immich_down_does_not_block_local_and_next_run_completes(self):
        self.make_card()
        self.configure(url="http://127.0.0.1:1", backup="  max_retries: 0\n")
        r = self.backup(check=None)
        self.assertIn("cannot reach Immich", r["error"])
        self.assert_immich_copies_wait()
        # four files and the sidecar of IMG_0002
        self.assertEqual(len([p for p in self.dest_files() if not p.startswith(".")]), 5)
        self.configure()
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.assertEqual(len(self.server.state()["assets"]), 4)

    def test_fixed_and_session_albums(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.configure(immich="  album_mode: fixed\n  album: Holidays 2023\n")
        self.backup()
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2023:07:15 18:30:05")
        self.backup()
        albums = self.server.state()["albums"]
        self.assertEqual([(a["name"], len(a["assets"])) for a in albums],
                         [("Holidays 2023", 2)])  # found again, not created twice
        make_photo(f"{self.card}/DCIM/IMG_0003.JPG", self.dir, "2023:07:16 18:30:05")
        self.configure(immich="  album_mode: session\n")
        self.backup()
        names = [a["name"] for a in self.server.state()["albums"]]
        self.assertEqual(len(names), 2)
        self.assertTrue(names[1].startswith("SnapSync card "), names)

    def test_album_pattern_names_an_album_per_file(self):
        """immich.album_pattern (docs/patterns.md): one album per distinct name, instead of
        album_mode; the destinations with paths are not changed by it."""
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2023:07:14 19:00:00")
        make_photo(f"{self.card}/DCIM/IMG_0003.JPG", self.dir, "2024:01:02 03:04:05")
        self.configure(immich='  album_mode: fixed\n  album: ignored\n'
                              '  album_pattern: "{year} {card} {model|nocamera}"\n')
        self.assertEqual(self.backup()["files_copied"], 3)
        albums = {a["name"]: len(a["assets"]) for a in self.server.state()["albums"]}
        self.assertEqual(albums, {"2023 card nocamera": 2, "2024 card nocamera": 1})

    def test_streams_a_large_file_with_bounded_memory(self):
        path = f"{self.card}/DCIM/LONG.MP4"
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:  # sparse: 2 GiB (multi-GB), cheap to make and to read
            f.write(b"\0\0\0\x18ftypmp42")
            f.truncate(2 << 30)
        self.configure(local=False)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        r = self.backup()
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        self.assertEqual(r["files_copied"], 1)
        a = self.server.state()["assets"][0]
        self.assertEqual(a["size"], 2 << 30)
        self.assertEqual(a["sha1"], sha1(path))
        if after > before:  # this run raised the children's peak: it must stay far below the file
            self.assertLess(after * 1024, 128 << 20, f"peak RSS {after} KiB")


class ImmichV3Test(ImmichBase, SnapsyncTest):
    VERSION = "3.1.0"


class ImmichV2Test(ImmichBase, SnapsyncTest):
    VERSION = "2.7.0"


class TlsProxy:
    """nghttpx on 127.0.0.1: TLS with ALPN h2 and http/1.1 in front of the test server, as a
    reverse proxy in front of a real Immich is; its access log records each request's protocol."""

    def __init__(self, workdir, backend_port):
        self.ca, crt, key = make_ca(workdir, "immich")
        self.port = free_port()
        self.access = os.path.join(workdir, "nghttpx-access.log")
        self.log = open(os.path.join(workdir, "nghttpx.log"), "w")
        self.proc = subprocess.Popen(
            [tool("nghttpx"), "--conf=/dev/null", f"--frontend=127.0.0.1,{self.port}",
             f"--backend=127.0.0.1,{backend_port}", "--workers=1", "--no-ocsp",
             f"--accesslog-file={self.access}",
             "--accesslog-format=$alpn $method $path $status",
             f"--errorlog-file={os.path.join(workdir, 'nghttpx-error.log')}", key, crt],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"https://127.0.0.1:{self.port}"
        wait_for(self.listening, 30, "nghttpx listening")

    def listening(self):
        import socket
        if self.proc.poll() is not None:
            raise AssertionError("nghttpx exited; see nghttpx.log")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def requests(self):
        """(protocol, method, path, status) per request, in order."""
        with open(self.access) as f:
            return [tuple(line.split()) for line in f if line.strip()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class ImmichHttpsTest(SnapsyncTest):
    """https through a TLS reverse proxy: HTTP/2 negotiated, immich.tls_ca_file for a self-signed
    server, an untrusted certificate refused clearly."""

    def setUp(self):
        super().setUp()
        self.server = ImmichServer(self.dir, api_key=KEY)
        self.cleanups.append(self.server.stop)
        self.proxy = TlsProxy(self.dir, self.server.port)
        self.cleanups.append(self.proxy.stop)
        self.env["IMMICH_API_KEY"] = KEY

    def configure(self, ca=True):
        extra = f"immich:\n  enabled: true\n  url: {self.proxy.url}\n"
        if ca:
            extra += f"  tls_ca_file: {self.proxy.ca}\n"
        write_config(self.config, self.dest, self.db, extra=extra)

    def test_https_speaks_http2_and_uploads_everything_once(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00", salt=b"2")
        make_blob(f"{self.card}/DCIM/CLIP.MP4", 3 << 20)
        self.configure()
        p = self.snapsync("test-connection", check=0)
        self.assertRegex(p.stdout, r"OK    immich: https://127\.0\.0\.1:\d+/api")
        r = self.backup()
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 3))
        assets = self.server.state()["assets"]
        self.assertEqual(sorted(a["sha1"] for a in assets),
                         sorted(sha1(f"{self.card}/DCIM/{n}")
                                for n in ("IMG_0001.JPG", "IMG_0002.JPG", "CLIP.MP4")))
        uploads = [q for q in self.proxy.requests() if q[1] == "POST" and q[2] == "/api/assets"]
        self.assertEqual(len(uploads), 3)
        self.assertTrue(all(q[0] == "h2" for q in uploads), uploads)
        # the database gone, the hashes are unknown: each upload goes out with its checksum
        # header and the server answers "duplicate" early, on the same HTTP/2 connection
        os.remove(self.db)
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        uploads = [q for q in self.proxy.requests() if q[1] == "POST" and q[2] == "/api/assets"]
        self.assertEqual([q[0] + " " + q[3] for q in uploads[3:]], ["h2 200"] * 3)
        self.assertEqual(len(self.server.state()["assets"]), 3)
        self.assertEqual(self.server.state()["errors"], [])

    def test_untrusted_certificate_is_refused_clearly(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.configure(ca=False)
        p = self.snapsync("test-connection", check=1)
        self.assertIn("FAIL  immich", p.stdout)
        self.assertIn("certificate is not trusted", p.stdout)
        self.assertIn("immich.tls_ca_file", p.stdout)
        r = self.backup(check=1)
        self.assertIn("certificate is not trusted", r["error"])
        self.assertEqual([q for q in self.proxy.requests() if q[2].startswith("/api/")], [])

    def test_unreadable_ca_file_is_a_clear_error(self):
        missing = os.path.join(self.dir, "no-such-ca.pem")
        write_config(self.config, self.dest, self.db,
                     extra=f"immich:\n  enabled: true\n  url: {self.proxy.url}\n"
                           f"  tls_ca_file: {missing}\n")
        p = self.snapsync("test-connection", check=None)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("immich.tls_ca_file: cannot read", p.stdout + p.stderr)
        self.assertIn("no-such-ca.pem", p.stdout + p.stderr)
