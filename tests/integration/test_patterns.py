# SPDX-License-Identifier: MIT
"""Folder and file name patterns (backup.folder_pattern, backup.file_pattern, a destination's own,
docs/patterns.md) end to end on generated cards with real EXIF (exiftool): every token in a real
path, the errors at load, "_N" on a collision, RAW+JPEG pairs and sidecars following their photo,
a re-run under a changed pattern copying nothing and saying so, the dry run showing the real
paths, `snapsync config`'s example, and {md5} refused for S3. SMB's mapping of a folder name is
in test_smb.py."""

import json
import os
import re
import sqlite3
import subprocess
import unittest

from harness import (SnapsyncTest, make_photo, make_tiff_raw, md5, tool, write_config)

SHOT = "2024:07:14 23:30:05"


def set_exif(path, **tags):
    """Writes EXIF tags (Make=..., Model=..., LensModel=..., SerialNumber=...) into path."""
    args = [f"-{k}={v}" for k, v in tags.items()]
    subprocess.run([tool("exiftool"), "-q", "-overwrite_original", *args, path], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def exif(path, tag):
    """What exiftool reads of tag in path ("" when absent)."""
    p = subprocess.run([tool("exiftool"), "-s3", f"-{tag}", path], check=True,
                       capture_output=True, text=True)
    return p.stdout.strip()


class PatternTest(SnapsyncTest):
    def patterns(self, folder=None, file=None, extra=""):
        backup = "  concurrent_files: 2\n  max_retries: 1\n  retry_delay: 0.1\n"
        if folder is not None:
            backup += f"  folder_pattern: {json.dumps(folder)}\n"
        if file is not None:
            backup += f"  file_pattern: {json.dumps(file)}\n"
        write_config(self.config, self.dest, self.db, backup=backup, extra=extra)

    def test_every_token_lands_in_a_real_path(self):
        photo = f"{self.card}/DCIM/100CANON/IMG_0001.JPG"
        make_photo(photo, self.dir, SHOT)
        self.patterns("{year}/{month}/{day}/{date} {hour}-{minute}-{second}/{card}/s{session}/"
                      "{make}.{model|nocamera}.{lens}.{serial|noserial}",
                      "{seq:3}_{seq}_{name}_{md5:8}_{md5}{ext}{EXT}")
        r = self.backup()
        self.assertEqual(r["files_copied"], 1, r)
        digest = md5(photo)
        # no camera in this photo: "unknown", or the default
        want = (f"2024/07/14/2024-07-14 23-30-05/{r['card_label']}/s{r['session_id']}/"
                f"unknown.nocamera.unknown.noserial/"
                f"001_1_IMG_0001_{digest[:8]}_{digest}.JPG.JPG")
        self.assertEqual(self.dest_files(), [want])
        self.assertEqual(md5(f"{self.dest}/{want}"), digest)
        # the database records the final path
        con = sqlite3.connect(self.db)
        (remote,) = con.execute("select remote from copies").fetchone()
        con.close()
        self.assertEqual(remote, f"{self.dest}/{want}")

    def test_camera_tokens_from_the_metadata(self):
        photo = f"{self.card}/DCIM/IMG_0002.JPG"
        make_photo(photo, self.dir, SHOT)
        set_exif(photo, Make="Canon", Model="Canon EOS R6/II", LensModel="RF24-105mm F4 L IS USM",
                 SerialNumber="012345678901")
        self.patterns("{make}/{model}/{lens}/{serial}", "{name}{ext}")
        self.assertEqual(self.backup()["files_copied"], 1)
        model = exif(photo, "Model").replace("/", "_")  # '/' cannot be in a name
        self.assertEqual(self.dest_files(), [f"Canon/{model}/RF24-105mm F4 L IS USM/012345678901/"
                                             "IMG_0002.JPG"])

    def test_errors_at_load_name_the_line_and_column(self):
        cases = [
            ('  folder_pattern: "{year}/{mnth}"\n',
             "config.yaml:13: backup.folder_pattern: pattern '{year}/{mnth}': column 8: unknown "
             "token '{mnth}'"),
            ('  file_pattern: "{name{ext}"\n',
             "config.yaml:13: backup.file_pattern: pattern '{name{ext}': column 1: '{' without "
             "'}'"),
            ('  folder_pattern: "{year}/../{day}"\n', "column 8: '..' is not allowed"),
            ('  folder_pattern: "/srv/{year}"\n', "column 1: absolute path"),
            ('  file_pattern: "{date}/{name}{ext}"\n', "a file pattern cannot hold '/'"),
            ('  file_pattern: "{seq:x}{ext}"\n', "column 5: bad width"),
        ]
        for text, want in cases:
            write_config(self.config, self.dest, self.db, backup="  max_retries: 1\n" + text)
            for args in (("config",), ("backup", self.card)):
                p = self.snapsync(*args, check=2)
                self.assertIn(want, p.stderr, args)
        self.assertFalse(os.path.exists(self.dest))

    def test_collisions_get_n_and_sidecars_and_pairs_follow(self):
        c = f"{self.card}/DCIM"
        # a RAW+JPEG pair: the date and the number are the RAW's for both
        make_tiff_raw(f"{c}/IMG_0010.CR2", self.dir, SHOT)
        make_photo(f"{c}/IMG_0010.JPG", self.dir, None)
        with open(f"{c}/IMG_0010.xmp", "wb") as f:
            f.write(b"<x:xmpmeta>pair</x:xmpmeta>")
        # two photos of one second: the same name from the pattern
        make_photo(f"{c}/IMG_0020.JPG", self.dir, "2024:07:15 08:00:00")
        make_photo(f"{c}/IMG_0021.JPG", self.dir, "2024:07:15 08:00:00")
        with open(f"{c}/IMG_0021.XMP", "wb") as f:
            f.write(b"<x:xmpmeta>21</x:xmpmeta>")
        self.patterns("{date}", "{year}{month}{day}_{hour}{minute}{second}_{seq:3}{ext}")
        r = self.backup()
        self.assertEqual(r["files_copied"], 4, r)
        files = self.dest_files()
        pair = [f for f in files if f.startswith("2024-07-14/")]
        self.assertEqual(pair, ["2024-07-14/20240714_233005_001.CR2",
                                "2024-07-14/20240714_233005_001.JPG",
                                "2024-07-14/20240714_233005_001.xmp"])
        self.assertEqual(md5(f"{self.dest}/2024-07-14/20240714_233005_001.JPG"),
                         md5(f"{c}/IMG_0010.JPG"))
        day = sorted(f for f in files if f.startswith("2024-07-15/"))
        # numbers 2 and 3 in the card's order; different names, no collision here
        self.assertEqual(day, ["2024-07-15/20240715_080000_002.JPG",
                               "2024-07-15/20240715_080000_003.JPG",
                               "2024-07-15/20240715_080000_003.XMP"])

        # without {seq} the two photos of one second collide: the second gets "_1", its sidecar
        # follows its final name
        self.patterns("{date}", "{year}{month}{day}_{hour}{minute}{second}{ext}")
        os.remove(self.db)
        r = self.backup()
        self.assertEqual(r["files_copied"], 4, r)
        names = sorted(os.listdir(f"{self.dest}/2024-07-15"))
        self.assertIn("20240715_080000.JPG", names)
        self.assertIn("20240715_080000_1.JPG", names)
        got = {md5(f"{self.dest}/2024-07-15/{n}") for n in ("20240715_080000.JPG",
                                                             "20240715_080000_1.JPG")}
        self.assertEqual(got, {md5(f"{c}/IMG_0020.JPG"), md5(f"{c}/IMG_0021.JPG")})
        second = ("20240715_080000_1" if md5(f"{self.dest}/2024-07-15/20240715_080000_1.JPG") ==
                  md5(f"{c}/IMG_0021.JPG") else "20240715_080000")
        with open(f"{self.dest}/2024-07-15/{second}.XMP", "rb") as f:
            self.assertEqual(f.read(), b"<x:xmpmeta>21</x:xmpmeta>")

    def test_changed_pattern_copies_nothing_and_says_so(self):
        for i in range(3):
            make_photo(f"{self.card}/DCIM/IMG_000{i}.JPG", self.dir, SHOT)
        self.patterns("{year}/{month}/{day}", "{name}{ext}")
        self.assertEqual(self.backup()["files_copied"], 3)
        before = self.dest_files()
        p = self.snapsync("backup", self.card, check=0)
        self.assertNotIn("earlier", p.stderr)  # the same patterns: nothing to say

        self.patterns("{date}/{model|nocamera}", "{seq:4}_{name}{ext}")
        p = self.snapsync("backup", self.card, "--json", check=0)
        r = json.loads(p.stdout)
        self.assertEqual((r["files_copied"], r["files_skipped"]), (0, 3), r)
        self.assertEqual(self.dest_files(), before)
        self.assertEqual(len(re.findall("3 files are already backed up under an earlier "
                                        "folder_pattern or file_pattern; they stay where they "
                                        "are", p.stderr)), 1, p.stderr)
        # a new file goes where the new patterns say
        make_photo(f"{self.card}/DCIM/IMG_0009.JPG", self.dir, SHOT)
        self.assertEqual(self.backup()["files_copied"], 1)
        self.assertIn("2024-07-14/nocamera/0004_IMG_0009.JPG", self.dest_files())

    def test_dry_run_and_config_show_the_real_paths(self):
        make_tiff_raw(f"{self.card}/DCIM/IMG_0001.CR2", self.dir, SHOT)
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, None)
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2023:01:02 03:04:05")
        self.patterns("{year}/{card} {model|nocamera}", "{seq:2}-{name}-{md5:4}{EXT}")
        r = self.backup(None, 0, "--dry-run")
        files = {f["path"]: f["targets"][0]["where"] for f in r["files"]}
        label = os.path.basename(self.card)
        self.assertEqual(files["DCIM/IMG_0001.CR2"],
                         f"{self.dest}/2024/{label} nocamera/01-IMG_0001-????.CR2")
        self.assertEqual(files["DCIM/IMG_0001.JPG"],
                         f"{self.dest}/2024/{label} nocamera/01-IMG_0001-????.JPG")
        self.assertEqual(files["DCIM/IMG_0002.JPG"],
                         f"{self.dest}/2023/{label} nocamera/02-IMG_0002-????.JPG")
        self.assertFalse(os.path.exists(self.dest))
        # the backup puts them there, the MD5 in place of the '?'s
        r = self.backup()
        self.assertEqual(r["card_label"], label)
        for src, where in files.items():
            digest = md5(f"{self.card}/{src}")
            self.assertEqual(md5(where.replace("????", digest[:4])), digest)

        out = self.snapsync("config", check=0).stdout
        self.assertIn("#   unraid: " + os.path.join(self.dest, "2024/EOS_DIGITAL Canon EOS R6/"
                                                      "01-IMG_0001-9e10.JPG"), out)

    def test_a_name_too_long_fails_that_file_and_the_dry_run_says_why(self):
        long = "L" * 100
        make_photo(f"{self.card}/DCIM/{long}.JPG", self.dir, SHOT)
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, SHOT)
        self.patterns("{date}", "{name}{name}{name}{ext}")
        r = self.backup(None, 0, "--dry-run")
        files = {f["path"]: f["targets"][0] for f in r["files"]}
        bad = files[f"DCIM/{long}.JPG"]
        self.assertRegex(bad["problem"], r"file_pattern '\{name\}\{name\}\{name\}\{ext\}' gives "
                                         r"a name longer than 255 bytes|longer than 255 bytes")
        self.assertIsNone(files["DCIM/IMG_0001.JPG"]["problem"])
        text = self.snapsync("backup", self.card, "--dry-run", check=0).stdout
        self.assertIn("(no path: ", text)
        r = self.backup(None, 1)  # some files failed
        self.assertEqual((r["files_copied"], r["files_failed"]), (1, 1), r)
        self.assertEqual(self.dest_files(), ["2024-07-14/IMG_0001IMG_0001IMG_0001.JPG"])

    def test_section_pattern_wins_over_organize_by_date(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, SHOT)
        local = os.path.join(self.dir, "local")
        extra = (f"local:\n  enabled: true\n  path: {local}\n  organize_by_date: false\n"
                 f"  folder_pattern: \"{{year}}-{{month}}\"\n  file_pattern: \"x_{{name}}{{ext}}\"\n")
        write_config(self.config, self.dest, self.db, extra=extra)
        with open(self.config) as f:
            text = f.read().replace("organize_by_date: true", "organize_by_date: false")
        with open(self.config, "w") as f:
            f.write(text)
        self.assertEqual(self.backup()["files_copied"], 1)
        self.assertEqual(self.dest_files(), ["IMG_0001.JPG"])  # organize_by_date false: no folder
        self.assertTrue(os.path.isfile(f"{local}/2024-07/x_IMG_0001.JPG"))

    def test_s3_refuses_md5(self):
        extra = ("s3:\n  enabled: true\n  endpoint: http://127.0.0.1:9\n  bucket: b\n"
                 "  access_key_id: k\n  secret_access_key: s\n  file_pattern: \"{md5:8}{ext}\"\n")
        write_config(self.config, self.dest, self.db, extra=extra)
        p = self.snapsync("config", check=2)
        self.assertRegex(p.stderr, r"config.yaml:\d+: s3.file_pattern: \{md5\} cannot be used for "
                                   r"s3: an object's key is chosen before its content is read")
        # its own pattern without it is fine, and rclone and folders take it: their name is
        # chosen at the end
        write_config(self.config, self.dest, self.db,
                     extra=extra.replace("{md5:8}{ext}", "{name}{ext}") +
                     "rclone:\n  file_pattern: \"{md5:8}{ext}\"\n")
        self.snapsync("config", check=0)


if __name__ == "__main__":
    unittest.main()
