# SPDX-License-Identifier: MIT
"""The S3 destination against a real S3 server on loopback: s3rver from npm (pinned in
tests/s3/package-lock.json, installed with `npm ci` into the build folder), on a port the OS
picks, started and stopped by each test. Every object is checked with Debian's rclone as an
independent client (its S3 backend configured by environment variables): keys, sizes and the
MD5 of the downloaded content.

What s3rver 3.7.1 does not do, so these tests cannot show it (docs/destinations.md): it checks
the access key id but not the SigV4 signature, ignores Content-MD5 and If-None-Match, has no
ListMultipartUploads, and gives a multipart object the plain MD5 of its content as ETag (AWS
gives "<md5 of part md5s>-N"); the multipart upload is seen in its request log instead."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

from harness import (BIN, SANITIZER_MARKS, SnapsyncTest, TMP_ROOT, make_blob, make_photo, md5,
                     tool, wait_for, write_config)

HERE = os.path.dirname(os.path.abspath(__file__))
S3_PKG = os.path.join(HERE, "..", "s3")
NODE_DIR = os.environ.get("SNAPSYNC_S3_NODE_DIR", os.path.join(TMP_ROOT, "s3-node"))
KEY_ID = "S3RVER"  # s3rver's built-in account
SECRET = "S3RVER"
BUCKET = "photos"
PREFIX = "station-1/cards"
MIB = 1024 * 1024
VIDEO_MTIME = 1689500000  # 2023-07-16 09:33 UTC


def install_s3rver():
    """npm ci of the pinned s3rver into NODE_DIR, once per lock file."""
    os.makedirs(NODE_DIR, exist_ok=True)
    with open(os.path.join(S3_PKG, "package-lock.json")) as f:
        want = json.load(f)["packages"]["node_modules/s3rver"]["version"]
    have = os.path.join(NODE_DIR, "node_modules", "s3rver", "package.json")
    if os.path.exists(have):
        with open(have) as f:
            if json.load(f)["version"] == want:
                return
    for f in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(S3_PKG, f), os.path.join(NODE_DIR, f))
    p = subprocess.run([tool("npm"), "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                       cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"npm ci failed:\n{p.stdout}\n{p.stderr}")


class S3rver:
    """s3rver on 127.0.0.1, a port the OS picks, with the bucket BUCKET; stopped by its pid.
    clock: a faketime offset for its clock ("+1h"), None its machine's."""

    def __init__(self, workdir, port=0, clock=None):
        install_s3rver()
        self.data = os.path.join(workdir, "s3-data")
        self.log = os.path.join(workdir, "s3rver.log")
        os.makedirs(self.data, exist_ok=True)
        # s3rver's continuation tokens use a cipher OpenSSL 3 keeps in its legacy provider
        env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider")
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                ([tool("faketime"), "-f", clock] if clock else []) +
                [tool("node"), os.path.join(NODE_DIR, "node_modules", "s3rver", "bin",
                                            "s3rver.js"),
                 "-d", self.data, "-a", "127.0.0.1", "-p", str(port), "--configure-bucket", BUCKET,
                 # virtual-hosted requests to <bucket>.s3.localhost (libcurl resolves every
                 # *.localhost to loopback itself)
                 "--service-endpoint", "localhost"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.port = None
        start = len(self.text())

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"s3rver exited:\n{self.text()}")
            m = re.search(r"S3rver listening on 127\.0\.0\.1:(\d+)", self.text()[start:])
            if m:
                self.port = int(m.group(1))
            return self.port is not None
        wait_for(listening, 60, "s3rver to listen")
        self.url = f"http://127.0.0.1:{self.port}"

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)


class S3Test(SnapsyncTest):
    def setUp(self):
        super().setUp()
        self.server = S3rver(self.dir)
        self.cleanups.append(self.server.stop)
        self.env["S3_ACCESS_KEY_ID"] = KEY_ID
        self.env["S3_SECRET_ACCESS_KEY"] = SECRET
        self.configure()

    def configure(self, bucket=BUCKET, part_size=5, endpoint=None, addressing="path"):
        extra = (f"s3:\n  enabled: true\n  endpoint: {endpoint or self.server.url}\n"
                 f"  bucket: {bucket}\n  addressing: {addressing}\n"
                 f"  prefix: /{PREFIX}/\n  part_size: {part_size}\n  timeout: 10\n")
        write_config(self.config, self.dest, self.db, extra=extra)
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:  # the bucket alone
            f.write(text.replace("unraid:\n  enabled: true", "unraid:\n  enabled: false"))

    # ---- rclone, the independent client ----

    def rclone(self, *args, check=True, data=None):
        # only this remote's settings: no AWS_* of the machine (a CA bundle for plain http
        # makes rclone's S3 backend fail), no rclone.conf
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        env.update(RCLONE_CONFIG_T_TYPE="s3", RCLONE_CONFIG_T_PROVIDER="Other",
                   RCLONE_CONFIG_T_ENDPOINT=self.server.url,
                   RCLONE_CONFIG_T_ACCESS_KEY_ID=KEY_ID,
                   RCLONE_CONFIG_T_SECRET_ACCESS_KEY=SECRET,
                   RCLONE_CONFIG_T_FORCE_PATH_STYLE="true", RCLONE_CONFIG="/dev/null")
        p = subprocess.run([tool("rclone"), *args], env=env, capture_output=True, timeout=300,
                           input=data)
        if check:
            self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        return p

    def objects(self):
        """{key below PREFIX: size} as rclone lists them."""
        p = self.rclone("lsjson", "-R", "--files-only", f"t:{BUCKET}/{PREFIX}")
        return {o["Path"]: o["Size"] for o in json.loads(p.stdout)}

    def remote_md5(self, key):
        """MD5 of the object's content, downloaded by rclone (not its ETag)."""
        p = self.rclone("md5sum", "--download", f"t:{BUCKET}/{PREFIX}/{key}")
        return p.stdout.decode().split()[0]

    def put_other(self, key, content):
        self.rclone("rcat", f"t:{BUCKET}/{PREFIX}/{key}", data=content)

    def make_card(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        # larger than part_size (5 MiB): a multipart upload of 3 parts; dated by its mtime
        make_blob(f"{self.card}/DCIM/100CANON/MVI_0003.MP4", 12 * MIB + 12345)
        os.utime(f"{self.card}/DCIM/100CANON/MVI_0003.MP4", (VIDEO_MTIME, VIDEO_MTIME))
        return {"2023/07/14/IMG_0001.JPG": "DCIM/100CANON/IMG_0001.JPG",
                "2023/07/15/IMG_0002.JPG": "DCIM/100CANON/IMG_0002.JPG"}

    def video_key(self, objects):
        keys = [k for k in objects if k.endswith("/MVI_0003.MP4")]
        self.assertEqual(len(keys), 1, objects)
        self.assertRegex(keys[0], r"^\d{4}/\d{2}/\d{2}/MVI_0003\.MP4$")
        return keys[0]

    def snapsync(self, *args, **kw):
        p = super().snapsync(*args, **kw)
        self.assertNotIn(f"{KEY_ID}:{SECRET}", p.stdout + p.stderr)
        return p

    def flipped_backup(self, relay_class, photo, video):
        """A photo (one PUT) and a video (the pattern in the second of three 5 MiB parts) named
        photo and video on the card, each holding a pattern that a relay_class (broker.py) in
        front of s3rver changes on the way; a backup through it without retries, which must
        fail both copies. Returns (paths, stderr)."""
        photo_pattern, video_pattern = b"SNAPSYNC-FLIP-P1", b"SNAPSYNC-FLIP-V2"
        paths = (f"{self.card}/DCIM/100CANON/{photo}", f"{self.card}/DCIM/100CANON/{video}")
        os.makedirs(os.path.dirname(paths[0]))
        with open(paths[0], "wb") as f:
            f.write(os.urandom(100 << 10) + photo_pattern * 4096 + os.urandom(100 << 10))
        with open(paths[1], "wb") as f:
            f.write(os.urandom(6 * MIB) + video_pattern * 4096 + os.urandom(5 * MIB))
        relay = relay_class(self.server, photo_pattern, video_pattern)
        self.cleanups.append(relay.stop)
        self.configure(endpoint=f"http://127.0.0.1:{relay.port}")
        self.no_retries()
        p = self.snapsync("backup", self.card, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertEqual(sorted(relay.flipped), [photo_pattern, video_pattern])
        self.assertEqual((r["files_copied"], r["files_failed"]), (0, 2), p.stderr)
        self.assertEqual(self.objects(), {})  # nothing under the final keys
        return paths, p.stderr

    def backup_again_lands(self, paths):
        """The next run, through the same relay (which changes nothing more), copies paths whole."""
        r = self.backup()
        self.assertEqual((r["status"], r["files_copied"]), ("completed", len(paths)), r)
        objects = self.objects()
        for path in paths:
            [key] = [k for k in objects if k.endswith("/" + os.path.basename(path))]
            self.assertEqual(self.remote_md5(key), md5(path))

    # ---- tests ----

    def test_card_to_bucket_verified_then_rerun_copies_nothing(self):
        expect = self.make_card()
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 3, r)
        objects = self.objects()
        self.assertEqual(len(objects), 3, objects)
        expect[self.video_key(objects)] = "DCIM/100CANON/MVI_0003.MP4"
        for key, rel in expect.items():
            self.assertEqual(objects[key], os.path.getsize(f"{self.card}/{rel}"), key)
            self.assertEqual(self.remote_md5(key), md5(f"{self.card}/{rel}"), key)
        # the video went as a multipart upload of 3 parts; the photos as one PUT each
        video = self.video_key(objects)
        # s3rver logs a request's line after answering it; "Stored ..." lines come before
        wait_for(lambda: f"{video}?partNumber=3&uploadId=" in self.server.text(), 30,
                 "the third part's line in s3rver's log")
        log = self.server.text()
        for n in (1, 2, 3):
            self.assertIn(f"{video}?partNumber={n}&uploadId=", log)
        self.assertNotIn("partNumber=4&", log)
        self.assertNotIn("IMG_0001.JPG?partNumber", log)
        puts_before = log.count("Stored ")
        # `snapsync status` names the bucket with the session's copies there, like any other
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)
        [dest] = st["session"]["destinations"]
        self.assertEqual((dest["completed"], dest["failed"], dest["pending"], dest["error"]),
                         (3, 0, 0, None), dest)
        self.assertTrue(dest["name"].startswith("s3:") and PREFIX in dest["name"], dest)
        self.assertEqual(dest["bytes_completed"],
                         sum(os.path.getsize(f"{self.card}/{rel}") for rel in expect.values()))
        text = self.snapsync("status", check=0).stdout
        self.assertIn(f"{dest['name']}: 3 verified", text)
        # a rerun copies nothing
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 0, r)
        self.assertEqual(self.server.text().count("Stored "), puts_before)
        self.assertEqual(self.objects(), objects)

    def test_same_content_already_there_is_not_uploaded_again(self):
        """A fresh database (another station, a lost db): the objects are there with the same
        content, found by HEAD and ETag; nothing gets a second name."""
        self.make_card()
        self.assertEqual(self.backup()["status"], "completed")
        before = self.objects()
        os.unlink(self.db)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(self.objects(), before)

    def test_other_content_under_the_same_key_gets_a_new_name(self):
        expect = self.make_card()
        # different objects already where the photo and the video would go (the video's of
        # the same size, so only its content tells them apart)
        self.put_other("2023/07/14/IMG_0001.JPG", b"someone else's photo")
        other_video = os.urandom(12 * MIB + 12345)
        video_date = time.strftime("%Y/%m/%d", time.localtime(VIDEO_MTIME))
        self.put_other(f"{video_date}/MVI_0003.MP4", other_video)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        objects = self.objects()
        self.assertEqual(objects["2023/07/14/IMG_0001.JPG"], len(b"someone else's photo"))
        self.assertEqual(self.remote_md5("2023/07/14/IMG_0001_1.JPG"),
                         md5(f"{self.card}/{expect['2023/07/14/IMG_0001.JPG']}"))
        videos = sorted(k for k in objects if "MVI_0003" in k)
        self.assertEqual(videos, [f"{video_date}/MVI_0003.MP4", f"{video_date}/MVI_0003_1.MP4"])
        self.assertEqual(self.remote_md5(f"{video_date}/MVI_0003_1.MP4"),
                         md5(f"{self.card}/DCIM/100CANON/MVI_0003.MP4"))
        self.assertEqual(self.remote_md5(f"{video_date}/MVI_0003.MP4"),
                         hashlib.md5(other_video).hexdigest())

    def test_wrong_keys_are_a_clear_access_error(self):
        self.make_card()
        self.env["S3_ACCESS_KEY_ID"] = "AKIAWRONGWRONGWRONG"
        p = self.snapsync("test-connection")
        self.assertNotEqual(p.returncode, 0)
        out = p.stdout + p.stderr
        self.assertIn("InvalidAccessKeyId", out)
        self.assertIn("S3_ACCESS_KEY_ID", out)
        r = self.backup(check=None)
        self.assertNotEqual(r["status"], "completed", r)
        self.assertIn("InvalidAccessKeyId", r["error"])
        self.assertEqual(self.objects(), {})

    def test_missing_bucket_is_a_clear_error(self):
        self.configure(bucket="no-such-bucket")
        p = self.snapsync("test-connection")
        self.assertNotEqual(p.returncode, 0)
        out = p.stdout + p.stderr
        self.assertIn("NoSuchBucket", out)
        self.assertIn("'no-such-bucket'", out)

    def test_test_connection_writes_and_deletes_a_probe(self):
        p = self.snapsync("test-connection", check=0)
        self.assertIn("probe object written and deleted", p.stdout + p.stderr)
        # s3rver logs a request after answering it: wait for the DELETE's line
        wait_for(lambda: re.search(r"\.snapsync-probe-[0-9a-f]{16} 204 ", self.server.text()),
                 30, "the probe's DELETE in s3rver's log")
        self.assertRegex(self.server.text(),
                         r'Stored object "station-1/cards/\.snapsync-probe-[0-9a-f]{16}"')
        self.assertEqual(self.objects(), {})

    def test_virtual_hosted_addressing(self):
        """addressing: virtual sends to <bucket>.<endpoint host>: the keys land in the bucket
        (path-style requests of the same keys would name a bucket "2023" that does not exist)."""
        expect = self.make_card()
        self.configure(endpoint=f"http://s3.localhost:{self.server.port}", addressing="virtual")
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        objects = self.objects()
        self.assertEqual(len(objects), 3, objects)
        for key, rel in expect.items():
            self.assertEqual(self.remote_md5(key), md5(f"{self.card}/{rel}"), key)

    def test_large_file_memory_stays_bounded(self):
        """A 256 MiB video in parts of 5 MiB: 52 parts, one of them in memory at a time; the
        peak RSS of snapsync (measured alone, in a process of its own) stays far below the
        file's size."""
        path = f"{self.card}/DCIM/100CANON/MVI_0009.MP4"
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20))
            f.truncate(256 << 20)
        peak = os.path.join(self.dir, "peak")
        measure = ("import resource, subprocess, sys\n"
                   "p = subprocess.run(sys.argv[2:])\n"
                   "open(sys.argv[1], 'w').write(str(resource.getrusage("
                   "resource.RUSAGE_CHILDREN).ru_maxrss))\n"
                   "sys.exit(p.returncode)\n")
        p = subprocess.run([tool("python3"), "-c", measure, peak, BIN, "--config", self.config,
                            "backup", self.card, "--json"], capture_output=True, text=True,
                           env=self.env, timeout=600)
        self.assertEqual(p.returncode, 0, p.stderr)
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual(r["files_copied"], 1, r)
        key = [k for k in self.objects() if k.endswith("MVI_0009.MP4")][0]
        self.assertEqual(self.remote_md5(key), md5(path))
        wait_for(lambda: f"{key}?partNumber=52&uploadId=" in self.server.text(), 30,
                 "the 52nd part's line in s3rver's log")
        with open(peak) as f:
            kib = int(f.read())
        self.assertLess(kib * 1024, 128 << 20, f"peak RSS {kib} KiB for a 256 MiB file")

    def test_dry_run_names_the_objects(self):
        self.make_card()
        p = self.snapsync("backup", self.card, "--dry-run", "--json", check=0)
        self.assertIn(f"s3://{BUCKET}/{PREFIX}/2023/07/14/IMG_0001.JPG", p.stdout)
        self.assertEqual(self.objects(), {})

    def test_a_byte_changed_on_the_way_to_the_server_is_caught(self):
        """A relay in front of s3rver changes one bit of a photo sent in one PUT and of one part
        of a video's multipart upload (a bad link or proxy). s3rver checks no Content-MD5 (a real
        server refuses both with BadDigest). The photo: its ETag (the MD5 of what s3rver stored)
        is not the MD5 sent, so it is read back, differs, and is deleted. The part: the server
        gave MD5 ETags before, so a part whose ETag is not its MD5 fails at once. Both copies fail
        with no object under their keys; the next run (the relay changes nothing more) uploads
        them whole."""
        from broker import FlipRelay
        paths, stderr = self.flipped_backup(FlipRelay, "IMG_0021.JPG", "MVI_0020.MP4")
        self.assertRegex(stderr, r"IMG_0021\.JPG.*(BadDigest|Content-MD5|MD5)")
        self.assertRegex(stderr, r"part 2 of '\S+/MVI_0020\.MP4': the server's ETag "
                                 r"\"[0-9a-f]{32}\" is not its MD5 [0-9a-f]{32}")
        self.backup_again_lands(paths)

    def test_a_bucket_whose_etags_are_not_md5s_is_checked_by_reading_back(self):
        """Every ETag the client sees is not the MD5 of the object (a relay rewrites them, as a
        bucket encrypted with KMS gives them): the photos (one PUT) and the video (multipart,
        completed with the parts' ETags as the server gave them) are read back and compared by
        size and MD5, land whole, and SnapSync says once why it reads them back; with a fresh
        database they are found there by reading them back."""
        from broker import EtagRelay
        expect = self.make_card()
        relay = EtagRelay(self.server)
        self.cleanups.append(relay.stop)
        self.configure(endpoint=f"http://127.0.0.1:{relay.port}")
        p = self.snapsync("backup", self.card, "--json")
        r = json.loads(p.stdout)
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 3), p.stderr)
        self.assertGreater(relay.rewritten, 0)
        self.assertEqual(p.stderr.count("ETags are not the MD5s of what it stores"), 1, p.stderr)
        objects = self.objects()
        self.assertEqual(len(objects), 3, objects)
        for key, rel in list(expect.items()) + [(self.video_key(objects),
                                                 "DCIM/100CANON/MVI_0003.MP4")]:
            self.assertEqual(self.remote_md5(key), md5(f"{self.card}/{rel}"), key)
        # `snapsync verify` reads them back too
        p = self.snapsync("verify", "--json")
        out = json.loads(p.stdout)
        self.assertEqual((out["checked"], out["ok"], out["problems"]), (3, 3, []), out)
        # a fresh database: the objects there are recognised by reading them back (their ETags
        # say nothing), not uploaded again under _1
        os.unlink(self.db)
        r = self.backup()
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 0), r)
        self.assertEqual(self.objects(), objects)

    def test_on_such_a_bucket_a_changed_byte_is_caught_by_reading_back(self):
        """ETags that are not MD5s and a server that does not check Content-MD5 (s3rver) behind
        a relay that also changes a bit of a photo and of a video's part: only reading the
        objects back can tell, and it does: both copies fail, nothing stays under their keys,
        and the next run uploads them whole."""
        from broker import EtagRelay
        paths, stderr = self.flipped_backup(EtagRelay, "IMG_0031.JPG", "MVI_0030.MP4")
        for name in ("IMG_0031.JPG", "MVI_0030.MP4"):
            self.assertRegex(stderr, name.replace(".", r"\.") +
                             r"'?: the server stored other bytes than were sent \(read back")
        self.backup_again_lands(paths)

    def test_verify_reads_every_object_back(self):
        """`snapsync verify` reads each object back in ranges and compares it with the record:
        all ok, then one replaced by other bytes of the same size (changed) and one deleted
        (missing)."""
        expect = self.make_card()
        self.assertEqual(self.backup()["files_copied"], 3)
        p = self.snapsync("verify", "--json")
        out = json.loads(p.stdout)
        self.assertEqual((out["checked"], out["ok"], out["problems"]), (3, 3, []), out)
        [photo1, photo2] = sorted(expect)
        size = os.path.getsize(f"{self.card}/{expect[photo1]}")
        self.put_other(photo1, os.urandom(size))
        self.rclone("deletefile", f"t:{BUCKET}/{PREFIX}/{photo2}")
        p = self.snapsync("verify", "--json", check=1)
        out = json.loads(p.stdout)
        self.assertEqual((out["checked"], out["ok"], out["changed"], out["missing"]), (3, 1, 1, 1),
                         out)

    def test_a_clock_an_hour_off_is_named(self):
        """The server's clock is an hour ahead of ours (s3rver under faketime): it refuses every
        signed request with RequestTimeTooSkewed, and SnapSync says the clock is off, in
        test-connection and in the backup, which copies nothing and loses nothing."""
        self.server.stop()
        self.server = S3rver(self.dir, clock="+1h")
        self.cleanups.append(self.server.stop)
        self.configure()
        self.make_card()
        p = self.snapsync("test-connection", check=None)
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stdout + p.stderr, r"RequestTimeTooSkewed.*clock")
        self.no_retries()
        p = self.snapsync("backup", self.card, "--json", check=None)
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stdout + p.stderr, r"RequestTimeTooSkewed.*clock")
        self.assertEqual(json.loads(p.stdout)["files_copied"], 0)
        # (rclone's own requests would be skewed too: s3rver's folder is looked at instead)
        stored = [n for _, _, names in os.walk(self.server.data) for n in names
                  if n.startswith(("IMG_", "MVI_"))]
        self.assertEqual(stored, [])

    def test_server_stopped_mid_upload_resumes_on_the_next_run(self):
        """s3rver killed while a 128 MiB video is partly sent: the session ends with the copy
        waiting, no object (half or whole) under its key; with the server back on the same port,
        the next run uploads it whole."""
        path = f"{self.card}/DCIM/100CANON/MVI_0010.MP4"
        make_blob(path, 128 * MIB)
        p = subprocess.Popen([BIN, "--config", self.config, "backup", self.card, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=self.env, cwd=self.dir)
        try:
            wait_for(lambda: "Stored part 4 of" in self.server.text(), 120, "part 4 stored")
            self.server.stop(signal.SIGKILL)
            out, err = p.communicate(timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, err)
        r = json.loads(out)
        self.assertNotEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 0, r)
        port = self.server.port
        self.server = S3rver(self.dir, port=port)
        self.cleanups.append(self.server.stop)
        self.assertEqual(self.objects(), {})  # no half object under the final key
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 1, r)
        objects = self.objects()
        key = [k for k in objects if k.endswith("/MVI_0010.MP4")]
        self.assertEqual(len(key), 1, objects)
        self.assertEqual(objects[key[0]], 128 * MIB)
        self.assertEqual(self.remote_md5(key[0]), md5(path))
