# SPDX-License-Identifier: MIT
"""The ASC MHL history SnapSync keeps in ascmhl/ of a folder destination (docs/verification.md),
checked the way an independent tool would: every generation and the chain validate against the
official schemas (tests/fixtures/ascmhl, with xmllint), the chain's C4 IDs are recomputed here
from the generation files' bytes (SHA-512 and base 58, written independently of SnapSync), and
the files the history lists are exactly the files of the tree, with their sizes and hashes."""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

from harness import SnapsyncTest, make_blob, make_photo, make_tiff_raw, make_video, md5, sha1

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "ascmhl")
NS = {"m": "urn:ASC:MHL:v2.0", "d": "urn:ASC:MHL:DIRECTORY:v2.0"}
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def c4(data):
    n = int.from_bytes(hashlib.sha512(data).digest(), "big")
    digits = ""
    while n:
        n, r = divmod(n, 58)
        digits = B58[r] + digits
    return "c4" + digits.rjust(88, "1")


def xmllint(path, schema):
    p = subprocess.run(["xmllint", "--noout", "--nonet", "--schema",
                        os.path.join(FIXTURES, schema), path],
                       capture_output=True, text=True)
    return p.returncode, p.stderr


def generations(dest):
    """The generation files in dest's ascmhl/, in order."""
    return sorted(f for f in os.listdir(os.path.join(dest, "ascmhl")) if f.endswith(".mhl"))


def chain(dest):
    """[(sequence number, generation file, C4)] of dest's ascmhl_chain.xml."""
    root = ET.parse(os.path.join(dest, "ascmhl", "ascmhl_chain.xml")).getroot()
    return [(int(h.get("sequencenr")), h.find("d:path", NS).text, h.find("d:c4", NS).text)
            for h in root.findall("d:hashlist", NS)]


def generation_paths(dest, name):
    """The paths generation `name` of dest lists, in its order."""
    root = ET.parse(os.path.join(dest, "ascmhl", name)).getroot()
    return [p.text for p in root.findall("m:hashes/m:hash/m:path", NS)]


def check_history(test, dest, root_name):
    """Validates dest's history (test's assertions) and returns {path: (size, md5)} over all
    generations; root_name is the name the generation files carry. Each file lists its MD5 and
    its XXH3-128 (xxh128) or SHA-1, or both (SHA-1 only when a destination needed it, as Immich
    does; sidecars have SHA-1 and no XXH3-128); a SHA-1 must be the file's when it is still
    there (the XXH3-128 is checked against known vectors in test_hasher.c)."""
    history = os.path.join(dest, "ascmhl")
    listed = {}
    for name in generations(dest):
        path = os.path.join(history, name)
        rc, err = xmllint(path, "ASCMHL.xsd")
        test.assertEqual(rc, 0, f"{name}: {err}")
        test.assertRegex(name,
                         rf"^\d{{4}}_{re.escape(root_name)}_\d{{4}}-\d\d-\d\d_\d{{6}}Z\.mhl$")
        root = ET.parse(path).getroot()
        patterns = [p.text for p in root.findall("m:processinfo/m:ignore/m:pattern", NS)]
        test.assertIn(".snapsync-tmp/", patterns)
        for h in root.findall("m:hashes/m:hash", NS):
            p = h.find("m:path", NS)
            test.assertNotIn(p.text, listed, "a file listed twice")
            test.assertEqual(h.find("m:md5", NS).get("action"), "original")
            s1, xxh = h.find("m:sha1", NS), h.find("m:xxh128", NS)
            test.assertTrue(s1 is not None or xxh is not None, p.text)
            if xxh is not None:
                test.assertRegex(xxh.text, r"^[0-9a-f]{32}$")
            on_disk = os.path.join(dest, p.text)
            if s1 is not None and os.path.exists(on_disk):
                test.assertEqual(s1.text, sha1(on_disk), p.text)
            listed[p.text] = (int(p.get("size")), h.find("m:md5", NS).text)
    rc, err = xmllint(os.path.join(history, "ascmhl_chain.xml"), "ASCMHLDirectory.xsd")
    test.assertEqual(rc, 0, err)
    gens = chain(dest)
    test.assertEqual([g[0] for g in gens], list(range(1, len(gens) + 1)))
    test.assertEqual([g[1] for g in gens], generations(dest))
    for seq, name, want in gens:
        with open(os.path.join(history, name), "rb") as f:
            test.assertEqual(c4(f.read()), want, f"the chain's C4 of {name}")
    return listed


def tree(dest):
    """{path: (size, md5)} of the files of dest, as `ascmhl diff` sees it (what the ignore
    patterns name left out)."""
    out = {}
    for root, dirs, files in os.walk(dest):
        if root == dest:
            dirs[:] = [d for d in dirs if d not in ("ascmhl", ".snapsync-tmp")]
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, dest)] = (os.path.getsize(p), md5(p))
    return out


class HistoryTest(SnapsyncTest):
    def history(self):
        return os.path.join(self.dest, "ascmhl")

    def generations(self):
        return generations(self.dest)

    def chain(self):
        return chain(self.dest)

    def check_history(self):
        return check_history(self, self.dest, "dest")

    def tree(self):
        return tree(self.dest)

    def test_each_session_adds_a_generation_listing_what_it_copied(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        make_blob(f"{self.card}/DCIM/100CANON/Caf\u00e9 & <1>.MOV", 2 << 20)
        self.backup()
        self.assertEqual(len(self.generations()), 1)
        self.assertEqual(self.check_history(), self.tree())

        # nothing new: no generation
        self.backup()
        self.assertEqual(len(self.generations()), 1)

        # a new file: generation 2 lists it alone
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2024:05:02 10:00:00")
        self.backup()
        self.assertEqual(len(self.generations()), 2)
        self.assertEqual(generation_paths(self.dest, self.generations()[1]),
                         ["2024/05/02/IMG_0002.JPG"])
        self.assertEqual(self.check_history(), self.tree())

    def test_sidecars_are_listed_once_with_their_photos(self):
        d = f"{self.card}/DCIM/100CANON"
        make_photo(f"{d}/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        with open(f"{d}/IMG_0001.xmp", "wb") as f:
            f.write(b"<x:xmpmeta>one</x:xmpmeta>\n")
        make_video(f"{d}/MVI_0002.MOV", self.dir)
        make_blob(f"{d}/MVI_0002.THM", 4096)
        # a RAW and a JPEG of one shot sharing one XMP: one file at the destination
        make_tiff_raw(f"{d}/IMG_0003.CR2", self.dir, "2024:05:03 10:00:00")
        make_photo(f"{d}/IMG_0003.JPG", self.dir, "2024:05:03 10:00:00", salt=b"3")
        with open(f"{d}/IMG_0003.xmp", "wb") as f:
            f.write(b"<x:xmpmeta>three</x:xmpmeta>\n")
        self.backup()

        files = self.tree()
        names = sorted(os.path.basename(p) for p in files)
        self.assertEqual(names, ["IMG_0001.JPG", "IMG_0001.xmp", "IMG_0003.CR2", "IMG_0003.JPG",
                                 "IMG_0003.xmp", "MVI_0002.MOV", "MVI_0002.THM"])
        self.assertEqual(len(self.generations()), 1)
        listed = generation_paths(self.dest, self.generations()[0])
        self.assertEqual(len(listed), len(set(listed)), "a file listed twice")
        # what `ascmhl diff` checks: no file of the tree is new to the history, none missing;
        # and each listed with the size and hashes of its bytes
        self.assertEqual(self.check_history(), files)

        # nothing new: no generation
        self.backup()
        self.assertEqual(len(self.generations()), 1)

        # a new photo whose XMP name is taken already by the user's own file: that file is not
        # SnapSync's copy and is not listed as one
        make_photo(f"{d}/IMG_0004.JPG", self.dir, "2024:05:04 10:00:00")
        with open(f"{d}/IMG_0004.xmp", "wb") as f:
            f.write(b"<x:xmpmeta>card</x:xmpmeta>\n")
        os.makedirs(f"{self.dest}/2024/05/04")
        with open(f"{self.dest}/2024/05/04/IMG_0004.xmp", "wb") as f:
            f.write(b"<x:xmpmeta>edited by the user</x:xmpmeta>\n")
        self.backup()
        self.assertEqual(generation_paths(self.dest, self.generations()[1]),
                         ["2024/05/04/IMG_0004.JPG"])

    def test_a_copy_and_its_sidecar_found_in_place_are_listed(self):
        # what a session that crashed after placing them and before recording them leaves
        d = f"{self.card}/DCIM"
        make_photo(f"{d}/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        with open(f"{d}/IMG_0001.xmp", "wb") as f:
            f.write(b"<x:xmpmeta>one</x:xmpmeta>\n")
        day = f"{self.dest}/2024/05/01"
        os.makedirs(day)
        for name in ("IMG_0001.JPG", "IMG_0001.xmp"):
            shutil.copyfile(f"{d}/{name}", f"{day}/{name}")
        self.backup()
        self.assertEqual(sorted(os.listdir(day)), ["IMG_0001.JPG", "IMG_0001.xmp"])
        self.assertEqual(sorted(generation_paths(self.dest, self.generations()[0])),
                         ["2024/05/01/IMG_0001.JPG", "2024/05/01/IMG_0001.xmp"])
        self.assertEqual(self.check_history(), self.tree())

    def test_an_unreadable_chain_is_left_alone_and_the_next_run_catches_up(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        self.backup()
        chain = os.path.join(self.history(), "ascmhl_chain.xml")
        with open(chain, "rb") as f:
            good = f.read()
        with open(chain, "wb") as f:
            f.write(b"<not a chain")
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2024:05:02 10:00:00")
        p = self.snapsync("backup", self.card, "--json", check=0)  # the copies are safe
        self.assertEqual(json.loads(p.stdout)["status"], "completed")
        with open(chain, "rb") as f:
            self.assertEqual(f.read(), b"<not a chain", "an unreadable chain is never rewritten")
        self.assertEqual(len(self.generations()), 1)
        self.assertIn("the ASC MHL history was not updated", p.stderr)
        self.assertIn("ascmhl_chain.xml is not XML", p.stderr)

        with open(chain, "wb") as f:
            f.write(good)
        make_photo(f"{self.card}/DCIM/IMG_0003.JPG", self.dir, "2024:05:03 10:00:00")
        self.backup()  # lists IMG_0002 (left over) and IMG_0003
        self.assertEqual(len(self.generations()), 2)
        self.assertEqual(self.check_history(), self.tree())

    def test_a_generation_number_taken_by_another_writer_is_skipped(self):
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        self.backup()
        # another tool added generation 2 without SnapSync's chain knowing
        first = self.generations()[0]
        stray = os.path.join(self.history(), "0002_dest_2020-01-01_000000Z.mhl")
        with open(os.path.join(self.history(), first), "rb") as f, open(stray, "wb") as g:
            g.write(f.read())
        make_photo(f"{self.card}/DCIM/IMG_0002.JPG", self.dir, "2024:05:02 10:00:00")
        self.backup()
        names = self.generations()
        self.assertEqual(len(names), 3)
        self.assertTrue(names[2].startswith("0003_"), names)
        self.assertEqual([g[0] for g in self.chain()], [1, 3])

    def test_mhl_off(self):
        text = open(self.config).read().replace("  organize_by_date: true\n",
                                                "  organize_by_date: true\n  mhl: false\n", 1)
        with open(self.config, "w") as f:
            f.write(text)
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2024:05:01 10:00:00")
        self.backup()
        self.assertFalse(os.path.exists(self.history()))
        self.assertEqual(len(glob.glob(f"{self.dest}/2024/05/01/*")), 1)
