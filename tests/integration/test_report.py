# SPDX-License-Identifier: MIT
"""`snapsync report` and GET /api/sessions/{id}/report after a real backup to a local folder:
the three formats agree with the card's files (sizes and MD5 computed here; no SHA-1, which no
destination here needs; an XXH3-128) and with the
copies in the destination; the HTML is well-formed, self-contained and holds no script whatever
the card's names; the web endpoint serves the same JSON; errors have their exit codes and
statuses."""

import html.parser
import json
import os

from harness import SnapsyncTest, make_photo, md5
from webserver import WebServer

HOSTILE = "DCIM/<script>alert(1)<\u002fscript>&'\".JPG"
NOT_UTF8 = os.fsdecode(b"DCIM/IMG_\xff.JPG")
VOID = {"meta", "br", "hr", "img", "link", "input", "col", "area", "base", "wbr", "source"}


class StrictHTML(html.parser.HTMLParser):
    """Checks that every element is closed in order and records what must not be there."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.text = [], [], set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href") or name.startswith("on"):
                self.errors.append(f"<{tag} {name}={value!r}>")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


class ReportTest(SnapsyncTest):
    def make_card(self):
        names = ["DCIM/100CANON/IMG_0001.JPG", "DCIM/100CANON/IMG_0002.JPG", HOSTILE, NOT_UTF8]
        for i, name in enumerate(names):
            make_photo(os.path.join(self.card, name), self.dir, f"2023:07:1{i} 18:30:05")
        # what the card holds, computed here: {path bytes: (size, md5)}
        return {os.fsencode(n): (os.path.getsize(os.path.join(self.card, n)),
                                 md5(os.path.join(self.card, n))) for n in names}

    def report_json(self, *args):
        data = self.run_bytes("report", *args, "--format", "json", check=0).stdout
        return json.loads(data.decode("utf-8"))  # strict: valid UTF-8 or it fails

    def test_three_formats_agree_with_the_card_and_the_copies(self):
        card = self.make_card()
        r = self.backup()
        self.assertEqual(r["files_copied"], 4, r)
        sid = r["session_id"]

        rep = self.report_json(str(sid))
        self.assertEqual(rep["session"]["id"], sid)
        self.assertEqual(rep["session"]["status"], "completed")
        self.assertEqual(rep["session"]["files_copied"], 4)
        self.assertIsNotNone(rep["session"]["ended_at"])
        self.assertEqual(rep["files_listed"], 4)
        seen = {}
        for f in rep["files"]:
            path = bytes.fromhex(f["path_hex"]) if "path_hex" in f else f["path"].encode()
            seen[path] = (f["size"], f["md5"])
            self.assertIsNone(f["sha1"])
            self.assertRegex(f["xxh128"], r"^[0-9a-f]{32}$")
            self.assertEqual(f["outcome"], "copied")
            self.assertTrue(f["capture_date"].startswith("2023-07-1"), f)
            [c] = f["copies"]
            self.assertTrue(c["verified"], c)
            self.assertGreaterEqual(c["verified_at"], rep["session"]["started_at"])
            self.assertGreaterEqual(c["mhl_generation"], 1, c)
            remote = bytes.fromhex(c["remote_hex"]) if "remote_hex" in c else c["remote"].encode()
            copy = os.path.join(os.fsencode(self.dest), remote)
            self.assertEqual(md5(copy), f["md5"], remote)
            self.assertEqual(os.path.getsize(copy), f["size"])
        self.assertEqual(seen, card)

        # "last" is the same session
        last = self.report_json("last")
        self.assertEqual(last["files"], rep["files"])

        text = self.run_bytes("report", str(sid), check=0).stdout.decode("utf-8")
        self.assertIn(f"session {sid}", text)
        self.assertIn("Result:    completed", text)
        xxh = {f["md5"]: f["xxh128"] for f in rep["files"]}
        for path, (size, m) in card.items():
            shown = path.decode("utf-8", "backslashreplace").replace("\\xff", "\\xFF")
            self.assertIn(f"{shown}\n  size:     {size} bytes", text)
            self.assertIn(f"md5:      {m}\n  sha1:     -\n  xxh128:   {xxh[m]}\n", text)
        self.assertEqual(text.count("      verified "), 4)
        self.assertIn("4 files listed.", text)

        out = os.path.join(self.dir, "report.html")
        p = self.run_bytes("report", str(sid), "--format", "html", "--output", out, check=0)
        self.assertEqual(p.stdout, b"")
        with open(out, "rb") as f:
            page = f.read().decode("utf-8")
        self.assertTrue(page.startswith("<!DOCTYPE html>"))
        self.assertNotIn("<script", page.lower())
        checker = StrictHTML()
        checker.feed(page)
        checker.close()
        self.assertEqual(checker.errors, [])
        self.assertEqual(checker.stack, [])
        self.assertNotIn("script", checker.tags)
        self.assertTrue({"html", "head", "style", "body", "table", "thead", "tbody"} <= checker.tags)
        self.assertIn("@page{size:A4", page)
        text = "".join(checker.text)
        self.assertIn(HOSTILE, text)  # shown as the name it is, as text
        self.assertIn("DCIM/IMG_\\xFF.JPG", text)
        for _, m in card.values():
            self.assertIn(f"MD5\xa0{m}SHA-1\xa0-XXH3-128\xa0{xxh[m]}", text)

        # the dashboard's API serves the same report
        w = WebServer(self, ())
        self.cleanups.append(lambda: self.assertEqual(w.stop(), 0))
        web = w.get_json(f"/api/sessions/{sid}/report")
        for k in ("session", "files", "files_listed", "report_version"):
            self.assertEqual(web[k], rep[k], k)
        st, h, data = w.request("GET", f"/api/sessions/{sid}/report?format=html")
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "text/html; charset=utf-8")
        self.assertEqual(h["x-content-type-options"], "nosniff")
        csp = h["content-security-policy"]
        self.assertIn("default-src 'none'", csp)
        self.assertNotIn("script-src", csp)
        self.assertIn(f'filename="snapsync-session-{sid}.html"', h["content-disposition"])
        self.assertNotIn(b"<script", data.lower())
        self.assertIn(card[b"DCIM/100CANON/IMG_0001.JPG"][1].encode(), data)
        st, h, data = w.request("GET", f"/api/sessions/{sid}/report?format=text")
        self.assertEqual((st, h["content-type"]), (200, "text/plain; charset=utf-8"))
        self.assertIn(b"4 files listed.", data)
        st, _, data = w.request("GET", f"/api/sessions/{sid}/report?format=pdf")
        self.assertEqual(st, 400, data)
        w.get_json(f"/api/sessions/{sid + 100}/report", status=404)
        st, _, _ = w.request("HEAD", f"/api/sessions/{sid}/report")
        self.assertEqual(st, 200)

    def test_errors(self):
        # no database yet: no session of any id
        p = self.run_bytes("report", "1", check=1)
        self.assertIn(b"no session 1", p.stderr)
        self.assertFalse(os.path.exists(self.db), "a report must not create the database")
        self.run_bytes("report", "last", check=1)
        make_photo(f"{self.card}/DCIM/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        sid = self.backup()["session_id"]
        p = self.run_bytes("report", str(sid + 1), check=1)
        self.assertEqual(p.stderr, f"snapsync: no session {sid + 1}\n".encode())
        self.assertEqual(p.stdout, b"")
        self.run_bytes("report", "abc", check=2)
        self.run_bytes("report", "0", check=2)
        self.run_bytes("report", check=2)
        self.run_bytes("report", str(sid), "--format", "pdf", check=2)
        # a report that cannot be written leaves no file
        out = os.path.join(self.dir, "missing-folder", "r.html")
        p = self.run_bytes("report", str(sid), "--output", out, check=1)
        self.assertIn(b"cannot write", p.stderr)
        p = self.run_bytes("report", str(sid), "--format", "html", "--output", "/dev/full",
                           check=1)
        self.assertIn(b"cannot write", p.stderr)
        self.assertTrue(os.path.exists("/dev/full"), "the failed report must not remove it")
