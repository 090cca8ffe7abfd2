# SPDX-License-Identifier: MIT
"""`snapsync backup` end to end on generated cards: real files, real disk, real SQLite."""

import json
import os
import signal
import sqlite3
import subprocess

from harness import (SnapsyncTest, make_blob, make_path_beyond_ceiling, make_photo,
                     make_tiff_raw, make_video, md5, wait_for, write_config)


class BackupTest(SnapsyncTest):
    def make_card(self):
        c = self.card
        make_photo(f"{c}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{c}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        make_photo(f"{c}/DCIM/100CANON/NODATE.JPG", self.dir, None)
        os.utime(f"{c}/DCIM/100CANON/NODATE.JPG", (1600000000, 1600000000))
        make_video(f"{c}/DCIM/100CANON/MVI_0003.MP4", self.dir)
        make_blob(f"{c}/DCIM/100CANON/notes.txt", 5000)  # extension not wanted
        make_blob(f"{c}/.Trashes/IMG_9999.JPG", 5000)  # hidden folder
        make_blob(f"{c}/System Volume Information/IMG_9998.JPG", 5000)
        make_blob(f"{c}/DCIM/100CANON/EMPTY.JPG", 0)  # below min_size

    def expected_paths(self):
        from datetime import datetime
        nodate = datetime.fromtimestamp(1600000000).strftime("%Y/%m/%d")
        return {
            "DCIM/100CANON/IMG_0001.JPG": "2023/07/14/IMG_0001.JPG",
            "DCIM/100CANON/IMG_0002.JPG": "2023/07/15/IMG_0002.JPG",
            "DCIM/100CANON/NODATE.JPG": f"{nodate}/NODATE.JPG",
            "DCIM/100CANON/MVI_0003.MP4": None,  # local date of 2021-03-04T10:20:30Z
        }

    def test_full_backup_then_rerun_copies_nothing(self):
        self.make_card()
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.assertEqual(r["files_total"], 4)
        self.assertEqual(r["files_copied"], 4)
        self.assertEqual(r["files_failed"], 0)
        self.assertGreater(r["bytes_copied"], 0)
        for key in ("session_id", "files_skipped", "files_duplicate", "duration_s"):
            self.assertIn(key, r)
        for src, dst in self.expected_paths().items():
            if dst is None:
                continue
            self.assertEqual(md5(f"{self.card}/{src}"), md5(f"{self.dest}/{dst}"), dst)
        videos = [p for p in self.dest_files() if p.endswith("MVI_0003.MP4")]
        self.assertEqual(len(videos), 1)
        self.assertTrue(videos[0].startswith("2021/03/0"), videos[0])
        self.assertEqual(self.temporaries(), [])
        self.assertEqual(len([p for p in self.dest_files() if not p.startswith(".")]), 4)

        before = {p: os.stat(f"{self.dest}/{p}").st_mtime_ns for p in self.dest_files()}
        r2 = self.backup()
        self.assertEqual(r2["files_copied"], 0)
        self.assertEqual(r2["files_skipped"], 4)
        self.assertEqual(r2["status"], "completed")
        after = {p: os.stat(f"{self.dest}/{p}").st_mtime_ns for p in self.dest_files()}
        self.assertEqual(before, after)

        # the database holds every file with its MD5 and XXH3-128 and a verified copy; no SHA-1,
        # which no destination here needs (docs/design.md, "Hashes")
        con = sqlite3.connect(self.db)
        rows = con.execute("select f.rel_path, f.md5, f.sha1, f.xxh128, c.state, c.verified_at "
                           "from files f join copies c on c.file_id = f.id").fetchall()
        self.assertEqual(len(rows), 4)
        for rel, md5hex, sha1hex, xxh, state, verified in rows:
            self.assertEqual(md5hex, md5(f"{self.card}/{rel}"))
            self.assertRegex(xxh, r"^[0-9a-f]{32}$")
            self.assertIsNone(sha1hex)
            self.assertEqual(state, "completed")
            self.assertGreater(verified, 0)

        s = json.loads(self.snapsync("sessions", "--json", check=0).stdout)
        self.assertEqual([x["status"] for x in s], ["completed", "completed"])
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)
        self.assertEqual(st["stats"]["sessions"], 2)
        self.assertEqual(st["session"]["id"], r2["session_id"])

    def tree(self, top, prefix=""):
        """Every path under top (starting with prefix) with its size and mtime, folders included."""
        out = {}
        for root, dirs, files in os.walk(top):
            for n in [n for n in dirs + files if n.startswith(prefix)]:
                p = os.path.join(root, n)
                st = os.lstat(p)
                out[os.path.relpath(p, top)] = (st.st_size, st.st_mtime_ns)
        return out

    def test_dry_run_writes_nothing(self):
        self.make_card()
        r = self.backup(None, 0, "--dry-run")
        self.assertEqual(r["status"], "dry_run")
        self.assertTrue(r["dry_run"])
        self.assertEqual(r["files_total"], 4)
        self.assertEqual(r["files_new"], 4)
        self.assertFalse(os.path.exists(self.dest))
        self.assertFalse(os.path.exists(self.db))
        self.assertFalse([n for n in os.listdir(os.path.dirname(self.db))
                          if n.startswith(os.path.basename(self.db))])
        # no database yet: each file is new, its target from its capture date (or its mtime)
        files = {f["path"]: f for f in r["files"]}
        for src, dst in self.expected_paths().items():
            self.assertEqual(files[src]["verdict"], "new", src)
            where = files[src]["targets"][0]["where"]
            if dst is None:
                self.assertTrue(where.startswith(f"{self.dest}/2021/03/0"), where)
            else:
                self.assertEqual(where, f"{self.dest}/{dst}")
        self.assertEqual(files["DCIM/100CANON/IMG_0001.JPG"]["date_from"], "metadata")
        self.assertEqual(files["DCIM/100CANON/NODATE.JPG"]["date_from"], "mtime")
        self.assertEqual(files["DCIM/100CANON/notes.txt"]["verdict"], "ignored")
        self.assertIn(".txt", files["DCIM/100CANON/notes.txt"]["why"])
        self.assertEqual(files["DCIM/100CANON/EMPTY.JPG"]["verdict"], "ignored")
        self.assertIn("min_size", files["DCIM/100CANON/EMPTY.JPG"]["why"])
        self.assertEqual(r["files_ignored"], 2)
        self.assertNotIn(".Trashes/IMG_9999.JPG", files)

        self.backup()
        c = self.card
        make_photo(f"{c}/DCIM/NEW.JPG", self.dir, "2023:01:01 00:00:00")
        # a copy of a backed-up photo under another name, seen by one backup: its hashes are known
        with open(f"{c}/DCIM/100CANON/IMG_0001.JPG", "rb") as f:
            data = f.read()
        with open(f"{c}/DCIM/COPY.JPG", "wb") as f:
            f.write(data)
        self.assertEqual(self.backup()["files_duplicate"], 1)
        r = self.backup(None, 0, "--dry-run")
        files = {f["path"]: f for f in r["files"]}
        # found a duplicate by that backup: done, and says of what
        self.assertEqual(files["DCIM/COPY.JPG"]["verdict"], "done")
        self.assertEqual(files["DCIM/COPY.JPG"]["duplicate_of"], "DCIM/100CANON/IMG_0001.JPG")
        self.assertIsNone(files["DCIM/100CANON/IMG_0002.JPG"]["duplicate_of"])
        # as after a read whose copy failed: hashes known, no copy; its content is backed up
        con = sqlite3.connect(self.db)
        with con:
            (fid,) = con.execute("select id from files where rel_path = 'DCIM/COPY.JPG'").fetchone()
            con.execute("delete from copies where file_id = ?", (fid,))
            con.execute("update files set state = 'failed', duplicate_of = null where id = ?",
                        (fid,))
        con.close()
        os.remove(f"{c}/DCIM/NEW.JPG")
        make_photo(f"{c}/DCIM/NEW.JPG", self.dir, "2023:01:01 00:00:00")
        # the name it would get is taken at the destination (by the earlier NEW.JPG)
        db_before = self.tree(self.dir, os.path.basename(self.db))
        dest_before = self.tree(self.dest)

        r = self.backup(None, 0, "--dry-run")
        self.assertEqual(r["status"], "dry_run")
        self.assertEqual((r["files_new"], r["files_done"], r["files_duplicate"]), (1, 4, 1))
        files = {f["path"]: f for f in r["files"]}
        new = files["DCIM/NEW.JPG"]
        self.assertEqual(new["verdict"], "new")
        self.assertEqual(new["date"], "2023/01/01")
        self.assertEqual(new["targets"][0]["where"], f"{self.dest}/2023/01/01/NEW.JPG")
        self.assertTrue(new["targets"][0]["name_taken"])
        done = files["DCIM/100CANON/IMG_0002.JPG"]
        self.assertEqual(done["verdict"], "done")
        self.assertEqual(done["targets"][0]["where"], f"{self.dest}/2023/07/15/IMG_0002.JPG")
        self.assertTrue(done["targets"][0]["recorded"])
        dup = files["DCIM/COPY.JPG"]
        self.assertEqual(dup["verdict"], "duplicate")
        self.assertEqual(dup["duplicate_of"], "DCIM/100CANON/IMG_0001.JPG")
        self.assertEqual(dup["targets"][0]["where"], f"{self.dest}/2023/07/14/IMG_0001.JPG")
        self.assertEqual(files["DCIM/100CANON/notes.txt"]["verdict"], "ignored")

        text = self.snapsync("backup", c, "--dry-run", check=0).stdout
        self.assertIn(f"new        DCIM/NEW.JPG -> {self.dest}/2023/01/01/NEW.JPG (name taken", text)
        self.assertIn(f"done       DCIM/100CANON/IMG_0002.JPG at {self.dest}/2023/07/15/IMG_0002.JPG",
                      text)
        self.assertIn("duplicate  DCIM/COPY.JPG same content as DCIM/100CANON/IMG_0001.JPG", text)
        self.assertIn("ignored    DCIM/100CANON/notes.txt: extension .txt", text)
        self.assertIn("dry run (nothing written): 6 files found, 1 new to copy", text)
        self.assertNotIn("completed", text)

        # nothing written: not the database (nor its -wal/-shm), not the destination
        self.assertEqual(self.tree(self.dir, os.path.basename(self.db)), db_before)
        self.assertEqual(self.tree(self.dest), dest_before)
        self.assertEqual(len(json.loads(self.snapsync("sessions", "--json", check=0).stdout)), 2)

    def test_duplicate_content_is_not_copied_again(self):
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2022:01:01 12:00:00", salt=b"same")
        self.backup()
        other = os.path.join(self.dir, "card2")
        os.makedirs(f"{other}/DCIM")
        with open(f"{self.card}/DCIM/A.JPG", "rb") as f:
            data = f.read()
        with open(f"{other}/DCIM/B.JPG", "wb") as f:
            f.write(data)
        r = self.backup(other)
        self.assertEqual(r["files_duplicate"], 1)
        self.assertEqual(r["files_copied"], 0)
        self.assertEqual([p for p in self.dest_files() if not p.startswith(".")],
                         ["2022/01/01/A.JPG"])
        self.assertEqual(self.temporaries(), [])

    def test_same_name_different_content_gets_new_name(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        os.makedirs(f"{self.dest}/2022/02/02")
        existing = f"{self.dest}/2022/02/02/IMG_0001.JPG"
        with open(existing, "wb") as f:
            f.write(b"someone else's photo")
        r = self.backup()
        self.assertEqual(r["files_copied"], 1)
        with open(existing, "rb") as f:
            self.assertEqual(f.read(), b"someone else's photo")
        self.assertEqual(md5(f"{self.dest}/2022/02/02/IMG_0001_1.JPG"),
                         md5(f"{self.card}/DCIM/IMG_0001.JPG"))

    def test_sidecars_travel_with_their_photo_under_its_final_name(self):
        c = f"{self.card}/DCIM/100CANON"
        make_photo(f"{c}/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        make_photo(f"{c}/IMG_0002.CR2", self.dir, "2022:02:02 12:00:01")
        files = {"IMG_0001.xmp": b"<x:xmpmeta>one</x:xmpmeta>", "IMG_0001.WAV": b"RIFF memo",
                 "IMG_0002.CR2.xmp": b"<x:xmpmeta>two</x:xmpmeta>", "LONELY.wav": b"RIFF alone"}
        for name, data in files.items():
            with open(f"{c}/{name}", "wb") as f:
                f.write(data)
        os.utime(f"{c}/IMG_0001.xmp", (1500000000, 1500000000))
        # IMG_0001.JPG is taken by another photo: the copy and its sidecars become IMG_0001_1.*
        day = f"{self.dest}/2022/02/02"
        os.makedirs(day)
        for name, data in (("IMG_0001.JPG", b"someone else's photo"), ("IMG_0001.xmp", b"theirs")):
            with open(f"{day}/{name}", "wb") as f:
                f.write(data)
        # wav is wanted: a memo next to a photo travels with it, a lonely one is a file of its own
        with open(self.config, "a") as f:
            f.write("files:\n  min_size: 1\n  extensions: [jpg, cr2, wav]\n")
        r = self.backup()
        self.assertEqual(r["files_failed"], 0)
        self.assertEqual(r["files_copied"], 3)  # the two photos and LONELY.wav
        got = {p: open(f"{self.dest}/{p}", "rb").read() for p in self.dest_files()
               if not p.startswith(".") and not p.endswith((".JPG", ".CR2"))}
        lonely = [p for p in got if p.endswith("LONELY.wav")]
        self.assertEqual(len(lonely), 1)
        self.assertEqual({p: d for p, d in got.items() if p not in lonely},
                         {"2022/02/02/IMG_0001.xmp": b"theirs",
                          "2022/02/02/IMG_0001_1.xmp": files["IMG_0001.xmp"],
                          "2022/02/02/IMG_0001_1.WAV": files["IMG_0001.WAV"],
                          "2022/02/02/IMG_0002.CR2.xmp": files["IMG_0002.CR2.xmp"]})
        self.assertEqual(os.stat(f"{day}/IMG_0001_1.xmp").st_mtime, 1500000000)
        self.assertEqual(md5(f"{day}/IMG_0001_1.JPG"), md5(f"{c}/IMG_0001.JPG"))
        self.assertEqual(self.temporaries(), [])

        before = {p: os.stat(f"{self.dest}/{p}").st_mtime_ns for p in self.dest_files()}
        r2 = self.backup()
        self.assertEqual(r2["files_copied"], 0)
        self.assertEqual(r2["files_total"], 3)
        self.assertEqual({p: os.stat(f"{self.dest}/{p}").st_mtime_ns for p in self.dest_files()},
                         before)

    def test_dry_run_shows_the_sidecars_that_travel_with_a_photo(self):
        c = f"{self.card}/DCIM"
        make_photo(f"{c}/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        for name, data in (("IMG_0001.XMP", b"<x:xmpmeta/>"), ("IMG_0001.WAV", b"RIFF memo"),
                           ("ORPHAN.xmp", b"<x:xmpmeta/>")):
            with open(f"{c}/{name}", "wb") as f:
                f.write(data)
        day = f"{self.dest}/2022/02/02"
        r = self.backup(None, 0, "--dry-run")
        files = {f["path"]: f for f in r["files"]}
        # the sidecars are no ignored files: they travel with their photo, each to its place
        self.assertNotIn("DCIM/IMG_0001.XMP", files)
        self.assertNotIn("DCIM/IMG_0001.WAV", files)
        self.assertEqual(files["DCIM/ORPHAN.xmp"]["verdict"], "ignored")
        self.assertEqual(r["files_ignored"], 1)
        photo = files["DCIM/IMG_0001.JPG"]
        self.assertEqual(photo["sidecars"], ["DCIM/IMG_0001.XMP", "DCIM/IMG_0001.WAV"])
        self.assertEqual(photo["targets"][0]["sidecars"],
                         [{"path": "DCIM/IMG_0001.XMP", "where": f"{day}/IMG_0001.XMP"},
                          {"path": "DCIM/IMG_0001.WAV", "where": f"{day}/IMG_0001.WAV"}])
        text = self.snapsync("backup", self.card, "--dry-run", check=0).stdout
        self.assertIn(f"new        DCIM/IMG_0001.JPG -> {day}/IMG_0001.JPG, with its sidecars "
                      "DCIM/IMG_0001.XMP, DCIM/IMG_0001.WAV\n", text)
        self.assertNotIn("IMG_0001.XMP:", text)
        self.assertIn("dry run (nothing written): 1 file found, 1 new to copy", text)
        self.assertIn(", 1 ignored\n", text)
        self.assertFalse(os.path.exists(self.dest))
        # what the dry run said is what the backup does
        self.assertEqual(self.backup()["files_copied"], 1)
        self.assertEqual(sorted(self.dest_files()), ["2022/02/02/IMG_0001.JPG",
                                                     "2022/02/02/IMG_0001.WAV",
                                                     "2022/02/02/IMG_0001.XMP"])

    def day_of(self, mtime):
        from datetime import datetime
        return datetime.fromtimestamp(mtime).strftime("%Y/%m/%d")

    def dry_targets(self):
        r = self.backup(None, 0, "--dry-run")
        return {f["path"]: f["targets"][0]["where"] for f in r["files"] if f["verdict"] == "new"}

    def test_a_raw_jpeg_pair_shares_the_date_only_the_raw_has(self):
        c = f"{self.card}/DCIM/100NIKON"
        make_tiff_raw(f"{c}/DSC_0001.NEF", self.dir, "2022:03:04 10:00:00")
        make_photo(f"{c}/DSC_0001.jpg", self.dir, None)  # no date; the extension's case differs
        make_tiff_raw(f"{c}/DSC_0002.NEF", self.dir, "2022:03:05 10:00:00")  # both dated
        make_photo(f"{c}/DSC_0002.JPG", self.dir, "2022:03:06 10:00:00")
        make_photo(f"{c}/DSC_0003.JPG", self.dir, None)  # no partner: its mtime
        for name in ("DSC_0001.NEF", "DSC_0002.NEF"):
            os.utime(f"{c}/{name}", (1500000000, 1500000000))
        for name in ("DSC_0001.jpg", "DSC_0003.JPG"):
            os.utime(f"{c}/{name}", (1600000000, 1600000000))  # another day than the RAW's
        nodate = self.day_of(1600000000)
        expected = {"DSC_0001.NEF": "2022/03/04", "DSC_0001.jpg": "2022/03/04",
                    "DSC_0002.NEF": "2022/03/05", "DSC_0002.JPG": "2022/03/06",
                    "DSC_0003.JPG": nodate}
        want = {f"DCIM/100NIKON/{n}": f"{self.dest}/{d}/{n}" for n, d in expected.items()}
        self.assertEqual(self.dry_targets(), want)
        r = self.backup()
        self.assertEqual((r["files_copied"], r["files_failed"]), (5, 0))
        self.assertEqual(self.dest_files(), sorted(f"{d}/{n}" for n, d in expected.items()))
        # the database keeps what the file itself says: the JPEG has no capture date
        con = sqlite3.connect(self.db)
        got = dict(con.execute("select rel_path, capture_time from files"))
        con.close()
        self.assertEqual(got["DCIM/100NIKON/DSC_0001.jpg"], 0)
        self.assertGreater(got["DCIM/100NIKON/DSC_0001.NEF"], 0)

    def test_a_raw_jpeg_pair_shares_the_date_only_the_jpeg_has_also_on_resume(self):
        c = f"{self.card}/DCIM/100CANON"
        make_photo(f"{c}/IMG_0001.JPG", self.dir, "2021:05:06 07:08:09")
        make_tiff_raw(f"{c}/IMG_0001.CR2", self.dir, None)
        make_photo(f"{c}/IMG_0002.HEIC", self.dir, "2021:05:07 07:08:09")
        make_tiff_raw(f"{c}/img_0002.dng", self.dir, None)  # the name's case differs
        for name in ("IMG_0001.CR2", "img_0002.dng"):
            os.utime(f"{c}/{name}", (1600000000, 1600000000))
        expected = {"IMG_0001.JPG": "2021/05/06", "IMG_0001.CR2": "2021/05/06",
                    "IMG_0002.HEIC": "2021/05/07", "img_0002.dng": "2021/05/07"}
        want = {f"DCIM/100CANON/{n}": f"{self.dest}/{d}/{n}" for n, d in expected.items()}
        self.assertEqual(self.dry_targets(), want)
        # an earlier session backed up only the JPEG/HEIF side of the pairs
        with open(self.config, "a") as f:
            f.write("files:\n  extensions: [jpg, heic]\n")
        self.assertEqual(self.backup()["files_copied"], 2)
        write_config(self.config, self.dest, self.db)
        self.assertEqual(self.dry_targets(), {k: v for k, v in want.items()
                                              if not k.endswith(("JPG", "HEIC"))})
        r = self.backup()
        self.assertEqual((r["files_copied"], r["files_failed"]), (2, 0))
        self.assertEqual(self.dest_files(), sorted(f"{d}/{n}" for n, d in expected.items()))

    def test_same_name_same_content_is_done(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2022:02:02 12:00:00")
        os.makedirs(f"{self.dest}/2022/02/02")
        with open(f"{self.card}/DCIM/IMG_0001.JPG", "rb") as s, \
                open(f"{self.dest}/2022/02/02/IMG_0001.JPG", "wb") as d:
            d.write(s.read())
        r = self.backup()
        self.assertEqual(r["files_failed"], 0)
        self.assertEqual(r["files_copied"], 0)
        self.assertEqual(r["files_skipped"], 1)
        self.assertEqual([p for p in self.dest_files() if not p.startswith(".")],
                         ["2022/02/02/IMG_0001.JPG"])

    def test_awkward_file_names(self):
        names = ["with space.JPG", "ünïcödé_写真.JPG", "new\nline.JPG", "x" * 251 + ".JPG",
                 "-leading-dash.JPG", "quote'\"semi;colon.JPG"]
        for n in names:
            make_photo(f"{self.card}/DCIM/{n}", self.dir, "2020:05:06 07:08:09")
        r = self.backup()
        self.assertEqual(r["files_copied"], len(names))
        for n in names:
            self.assertEqual(md5(f"{self.card}/DCIM/{n}"), md5(f"{self.dest}/2020/05/06/{n}"))
        # a second file with a 255-byte name and other content: the _1 name still fits
        other = os.path.join(self.dir, "card2")
        make_photo(f"{other}/{'x' * 251}.JPG", self.dir, "2020:05:06 07:08:09")
        r = self.backup(other)
        self.assertEqual(r["files_copied"], 1)
        long_names = [p for p in os.listdir(f"{self.dest}/2020/05/06") if p.startswith("xxx")]
        self.assertEqual(len(long_names), 2)
        self.assertTrue(all(len(p.encode()) <= 255 for p in long_names))

    def test_symlinks_out_of_the_card_are_not_followed(self):
        outside = os.path.join(self.dir, "outside")
        make_photo(f"{outside}/SECRET.JPG", self.dir, "2020:01:01 00:00:00")
        make_photo(f"{self.card}/DCIM/REAL.JPG", self.dir, "2020:01:01 00:00:00")
        os.symlink(f"{outside}/SECRET.JPG", f"{self.card}/DCIM/LINK.JPG")
        os.symlink(outside, f"{self.card}/DCIM/linkdir")
        os.symlink("/", f"{self.card}/root")
        r = self.backup()
        self.assertEqual(r["files_total"], 1)
        self.assertEqual([p for p in self.dest_files() if not p.startswith(".")],
                         ["2020/01/01/REAL.JPG"])

    def test_kill_9_then_resume(self):
        write_config(self.config, self.dest, self.db,
                     "files:\n  min_size: 1\n")
        with open(self.config, "a") as f:
            pass
        for i in range(12):
            make_blob(f"{self.card}/DCIM/CLIP{i:02d}.MP4", 24 << 20)
        cmd = [os.environ.get("SNAPSYNC_BIN", "snapsync"), "--config", self.config, "backup",
               self.card]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=self.env, cwd=self.dir)
        # wait until at least one file is complete and another is being written
        def mid_run():
            done = [x for x in self.dest_files() if not x.startswith(".")]
            return len(done) >= 1 and self.temporaries()
        try:
            wait_for(mid_run, 120, "a backup in the middle of a file")
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        self.assertTrue(self.temporaries(), "the kill should leave a temporary behind")
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.assertEqual(r["files_failed"], 0)
        self.assertEqual(r["files_copied"] + r["files_skipped"], 12)
        self.assertEqual(self.temporaries(), [])
        copies = [x for x in self.dest_files() if not x.startswith(".")]
        self.assertEqual(len(copies), 12, copies)  # each file exactly once, no _1 duplicates
        for c in copies:
            name = os.path.basename(c)
            self.assertEqual(md5(f"{self.dest}/{c}"), md5(f"{self.card}/DCIM/{name}"))
        con = sqlite3.connect(self.db)
        self.assertEqual(con.execute("select count(*) from copies where state='completed' "
                                     "and verified_at > 0").fetchone()[0], 12)
        statuses = [x["status"] for x in json.loads(
            self.snapsync("sessions", "--json", check=0).stdout)]
        self.assertEqual(statuses, ["completed", "interrupted"])

    def test_unwritable_destination_fails_clearly(self):
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2020:01:01 00:00:00")
        with open(self.dest, "w") as f:  # a file where the folder should be
            f.write("not a folder")
        p = self.snapsync("backup", self.card, check=1)
        self.assertIn("destination", p.stdout + p.stderr)
        r = self.backup(None, 1)
        self.assertEqual(r["files_failed"], 1)
        self.assertEqual(r["status"], "failed")

    def test_nfs_refuses_a_folder_that_is_not_a_mount_point(self):
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2020:01:01 00:00:00")
        os.makedirs(self.dest)
        with open(self.config) as f:
            text = f.read().replace("protocol: local", "protocol: nfs")
        with open(self.config, "w") as f:
            f.write(text)
        p = self.snapsync("backup", self.card, check=1)
        self.assertIn("not a mount point", p.stdout + p.stderr)
        self.assertEqual(os.listdir(self.dest), [])

    # ---- a card file that changes while it is read is never recorded ----

    def start_big_backup(self, size):
        """A card with a small photo and a sparse file of size bytes; starts `backup --json` and
        returns it once the big file's copy has started."""
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        self.big = f"{self.card}/DCIM/BIG.MP4"
        with open(self.big, "wb") as f:
            f.truncate(size)
        p = subprocess.Popen([self.bin(), "--config", self.config, "backup", self.card, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=self.env, cwd=self.dir)
        self.cleanups.append(lambda: (p.poll() is None and p.kill(), p.wait()))
        wait_for(lambda: any(os.path.getsize(os.path.join(self.dest, ".snapsync-tmp", t)) > 0
                             for t in self.temporaries()), 60, "the big copy to start")
        return p

    def assert_big_file_not_recorded(self, p):
        out, err = p.communicate(timeout=300)
        self.assertEqual(p.returncode, 1, err)
        r = json.loads(out)
        self.assertEqual((r["status"], r["files_copied"], r["files_failed"]), ("partial", 1, 1), r)
        self.assertIn("changed on the card", r["error"])
        self.assertIn("discarded", err)
        # no fragment under a final name, no temporary left, nothing completed in the database
        self.assertEqual([f for f in self.dest_files() if "BIG" in f], [])
        self.assertEqual(self.temporaries(), [])
        con = sqlite3.connect(self.db)
        rows = con.execute("select f.state, c.state from files f join copies c on c.file_id = "
                           "f.id where f.rel_path = 'DCIM/BIG.MP4'").fetchall()
        con.close()
        self.assertEqual(rows, [("failed", "failed")])

    def bin(self):
        from harness import BIN
        return BIN

    def test_a_file_that_shrinks_while_it_is_read_is_discarded(self):
        p = self.start_big_backup(512 << 20)
        os.truncate(self.big, 100 << 20)
        self.assert_big_file_not_recorded(p)

    def test_a_file_that_grows_while_it_is_read_is_discarded(self):
        p = self.start_big_backup(512 << 20)
        os.truncate(self.big, 600 << 20)
        self.assert_big_file_not_recorded(p)

    def test_parallel_false_writes_both_destinations_from_one_read(self):
        self.make_card()
        second = os.path.join(self.dir, "second")
        with open(self.config) as f:
            text = f.read().replace("  concurrent_files: 2\n", "  concurrent_files: 2\n  parallel: false\n")
        with open(self.config, "w") as f:
            f.write(text + f"local:\n  enabled: true\n  path: {second}\n")
        r = self.backup()
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 4), r)
        for root in (self.dest, second):
            copies = [f for dp, _, fs in os.walk(root) for f in fs
                      if not dp.endswith("tmp") and not dp.endswith("ascmhl")]
            self.assertEqual(len(copies), 4, (root, copies))

    def test_bad_path_and_bad_config_exit_2(self):
        p = self.snapsync("backup", os.path.join(self.dir, "missing"), check=2)
        self.assertIn("missing", p.stderr)
        with open(self.config, "a") as f:
            f.write("bogus_section:\n  x: 1\n")
        p = self.snapsync("backup", self.card, check=2)
        self.assertRegex(p.stderr, r"config\.yaml:\d+: ")

    def test_corrupt_database_is_a_clear_error(self):
        make_photo(f"{self.card}/DCIM/A.JPG", self.dir, "2020:01:01 00:00:00")
        with open(self.db, "wb") as f:
            f.write(os.urandom(8192))
        p = self.snapsync("backup", self.card, check=1)
        self.assertIn("corrupt", p.stderr)
        p = self.snapsync("status", check=1)
        self.assertIn("corrupt", p.stderr)


class ScanRulesTest(SnapsyncTest):
    """What the scan could not see decides the session: every entry that could not be listed or
    examined makes it partial (exit 1) and is named; a source without wanted files is empty."""

    def test_a_deep_tree_is_backed_up_fully(self):
        # far deeper than the old limit of 32 folders, still inside the path ceiling
        deep = os.path.join(*[f"d{i}" for i in range(300)])
        make_blob(f"{self.card}/{deep}/IMG_DEEP.JPG", 4000)
        make_blob(f"{self.card}/DCIM/IMG_TOP.JPG", 4000)
        r = self.backup()
        self.assertEqual(r["status"], "completed")
        self.assertEqual(r["files_total"], 2)
        self.assertEqual(r["files_copied"], 2)
        self.assertEqual(r["scan_problems"], 0)
        copies = sorted(os.path.basename(p) for p in self.dest_files() if not p.startswith("."))
        self.assertEqual(copies, ["IMG_DEEP.JPG", "IMG_TOP.JPG"])

    def test_a_path_beyond_the_ceiling_makes_the_session_partial(self):
        make_blob(f"{self.card}/DCIM/IMG_TOP.JPG", 4000)
        name = make_path_beyond_ceiling(self.card)
        p = self.snapsync("backup", self.card, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertEqual(r["status"], "partial")
        self.assertEqual(r["files_copied"], 1)
        self.assertEqual(r["files_failed"], 0)
        self.assertEqual(r["scan_problems"], 1)
        self.assertIn("path too long", p.stderr)
        # the log keeps the start and the end of a path this long; status has all of it
        self.assertIn("error: '" + name[:200], p.stderr)
        self.assertIn("path too long", r["error"])
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)["session"]
        self.assertEqual(st["status"], "partial")
        self.assertEqual(st["scan_problems"], 1)
        [entry] = st["scan_problem_entries"]
        self.assertTrue(entry["path"].startswith(name + "/" + name), entry["path"])
        self.assertIn("path too long", entry["error"])
        text = self.snapsync("status", check=0).stdout
        self.assertIn("1 entry of the source could not be read", text)
        self.assertIn("path too long", text)

    def test_a_source_without_photos_or_videos_is_empty(self):
        make_blob(f"{self.card}/MISC/notes.txt", 100)
        make_blob(f"{self.card}/DCIM/EMPTY.JPG", 0)  # below min_size
        r = self.backup()
        self.assertEqual(r["status"], "empty")
        self.assertEqual(r["files_total"], 0)
        p = self.snapsync("backup", self.card, check=0)
        self.assertIn("no photos or videos found", p.stdout)
        self.assertIn("jpg", p.stdout)
        self.assertIn("mp4", p.stdout)
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)["session"]
        self.assertEqual(st["status"], "empty")
        self.assertEqual(st["scan_problems"], 0)
        self.assertEqual(st["scan_problem_entries"], [])
        self.assertIn("empty", self.snapsync("status", check=0).stdout)
        r = self.backup(self.card, 0, "--dry-run")
        self.assertEqual((r["status"], r["files_total"], r["files_ignored"]), ("dry_run", 0, 2))


class ConcurrentReadTest(SnapsyncTest):
    def test_status_reads_while_a_backup_writes(self):
        for i in range(8):
            make_blob(f"{self.card}/DCIM/CLIP{i}.MP4", 16 << 20)
        write_config(self.config, self.dest, self.db,
                     backup="  concurrent_files: 1\n  max_retries: 0\n")
        p = self.start_held_backup()
        try:
            st = json.loads(self.snapsync("status", "--json", check=0).stdout)
            self.assertEqual(st["state"], "backing_up")
            self.assertEqual(st["session"]["status"], "backing_up")
            self.assertEqual(st["session"]["files_total"], 8)
            s = json.loads(self.snapsync("sessions", "--json", check=0).stdout)
            self.assertEqual(len(s), 1)
        finally:
            p.send_signal(signal.SIGCONT)
            self.assertEqual(p.wait(timeout=120), 0)
        st = json.loads(self.snapsync("status", "--json", check=0).stdout)
        self.assertEqual(st["state"], "idle")
        self.assertEqual(st["session"]["files_copied"], 8)
