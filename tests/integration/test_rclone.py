# SPDX-License-Identifier: MIT
"""The rclone destination (dest_rclone.c) driving Debian's rclone against remotes that run here:
rclone's `local` backend (a remote named in an rclone.conf of the test) and its S3 backend
pointed at the s3rver of test_s3.py (a remote configured through RCLONE_CONFIG_* variables,
which SnapSync passes on to rclone). What lands is checked with files and hashes read directly
(local) or by a separate rclone call (S3). And rclone's sftp backend against a private sshd on
loopback (sshd.py), where rclone gets its hashes by running md5sum over ssh."""

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request

from harness import (BIN, SANITIZER_MARKS, SnapsyncTest, free_port, make_blob, make_photo, md5,
                     tool, wait_for)
from sshd import Sshd
from test_s3 import BUCKET, KEY_ID, SECRET, S3rver

MIB = 1024 * 1024


def host_tag():
    """This machine's name as dest_rclone.c puts it in temporary names."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in socket.gethostname())[:63]


def listening(pid):
    """(address, port) of the TCP sockets process pid listens on (IPv4)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                hexaddr, hexport = fields[1].split(":")
                addr = ".".join(str(b) for b in reversed(bytes.fromhex(hexaddr)))
                out.append((addr, int(hexport, 16)))
    return out


def rclone_alone(test, remote, config_file=None):
    """test's configuration backs up to the rclone remote alone (the share off)."""
    with open(test.config) as f:
        text = f.read()
    text = text.replace("unraid:\n  enabled: true", "unraid:\n  enabled: false")
    text += (f"rclone:\n  enabled: true\n  remote: {remote}\n" +
             (f"  config_file: {config_file}\n" if config_file else "") + "  timeout: 10\n")
    with open(test.config, "w") as f:
        f.write(text)


class RcloneLocalTest(SnapsyncTest):
    def setUp(self):
        super().setUp()
        self.remote_dir = os.path.join(self.dir, "remote")
        self.rclone_conf = os.path.join(self.dir, "rclone.conf")
        with open(self.rclone_conf, "w") as f:
            f.write("[loc]\ntype = local\n")
        for k in [k for k in self.env if k.startswith("RCLONE_")]:
            del self.env[k]
        self.configure()

    def configure(self, remote=None, by_date=True):
        remote = remote or f"loc:{self.remote_dir}/photos"
        with open(self.config) as f:
            text = f.read()
        start = text.find("rclone:\n")
        if start >= 0:
            text = text[:start]
        text = text.replace("unraid:\n  enabled: true", "unraid:\n  enabled: false")
        text += (f"rclone:\n  enabled: true\n  remote: {remote}\n"
                 f"  config_file: {self.rclone_conf}\n"
                 f"  organize_by_date: {'true' if by_date else 'false'}\n  timeout: 10\n"
                 f"  extra_args: [--local-no-preallocate]\n")
        with open(self.config, "w") as f:
            f.write(text)

    def photos(self):
        """Relative paths of the files under the remote's folder, SnapSync's own included."""
        root = os.path.join(self.remote_dir, "photos")
        out = []
        for d, _, files in os.walk(root):
            out += [os.path.relpath(os.path.join(d, f), root) for f in files]
        return sorted(out)

    def remote_temporaries(self):
        tmp = os.path.join(self.remote_dir, "photos", ".snapsync-tmp")
        return sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []

    def make_card(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        return {"2023/07/14/IMG_0001.JPG": "DCIM/100CANON/IMG_0001.JPG",
                "2023/07/15/IMG_0002.JPG": "DCIM/100CANON/IMG_0002.JPG"}

    def test_backup_lands_dated_and_verified_then_rerun_copies_nothing(self):
        expect = self.make_card()
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 2, r)
        self.assertEqual(self.photos(), sorted(expect))
        for rel, card_rel in expect.items():
            self.assertEqual(md5(f"{self.remote_dir}/photos/{rel}"), md5(f"{self.card}/{card_rel}"))
        self.assertEqual(self.remote_temporaries(), [])
        before = {rel: os.stat(f"{self.remote_dir}/photos/{rel}").st_mtime_ns for rel in expect}
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 0, r)
        self.assertEqual({rel: os.stat(f"{self.remote_dir}/photos/{rel}").st_mtime_ns
                          for rel in expect}, before)
        # `snapsync verify` reads each copy back through `rclone cat`
        p = self.snapsync("verify", check=0)
        self.assertRegex(p.stdout + p.stderr, r"2 copies checked, 2 ok")
        with open(f"{self.remote_dir}/photos/2023/07/14/IMG_0001.JPG", "r+b") as f:
            f.seek(100)
            f.write(b"XXXX")
        p = self.snapsync("verify")
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stdout + p.stderr, r"1 changed")

    def test_without_date_folders(self):
        self.make_card()
        self.configure(by_date=False)
        self.assertEqual(self.backup()["files_copied"], 2)
        self.assertEqual(self.photos(), ["IMG_0001.JPG", "IMG_0002.JPG"])

    def test_md5_in_the_name_is_chosen_at_the_end(self):
        """{md5} (docs/patterns.md): known only once the file is read; rclone picks the final
        name when the upload is done, so it takes it (S3 does not)."""
        expect = self.make_card()
        with open(self.config, "a") as f:
            f.write('  folder_pattern: "{year}/{md5:2}"\n  file_pattern: "{name}_{md5:8}{ext}"\n')
        self.assertEqual(self.backup()["files_copied"], 2)
        want = []
        for card_rel in expect.values():
            digest = md5(f"{self.card}/{card_rel}")
            name = os.path.basename(card_rel).replace(".JPG", f"_{digest[:8]}.JPG")
            want.append(f"2023/{digest[:2]}/{name}")
        self.assertEqual(self.photos(), sorted(want))
        self.assertEqual(self.remote_temporaries(), [])

    def test_other_content_under_the_name_gets_1_same_content_is_found(self):
        expect = self.make_card()
        os.makedirs(f"{self.remote_dir}/photos/2023/07/14")
        with open(f"{self.remote_dir}/photos/2023/07/14/IMG_0001.JPG", "wb") as f:
            f.write(b"someone else's photo")
        os.makedirs(f"{self.remote_dir}/photos/2023/07/15")
        with open(f"{self.card}/{expect['2023/07/15/IMG_0002.JPG']}", "rb") as src, \
                open(f"{self.remote_dir}/photos/2023/07/15/IMG_0002.JPG", "wb") as dst:
            dst.write(src.read())
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(self.photos(), ["2023/07/14/IMG_0001.JPG", "2023/07/14/IMG_0001_1.JPG",
                                         "2023/07/15/IMG_0002.JPG"])
        with open(f"{self.remote_dir}/photos/2023/07/14/IMG_0001.JPG", "rb") as f:
            self.assertEqual(f.read(), b"someone else's photo")  # never overwritten
        self.assertEqual(md5(f"{self.remote_dir}/photos/2023/07/14/IMG_0001_1.JPG"),
                         md5(f"{self.card}/{expect['2023/07/14/IMG_0001.JPG']}"))

    def test_two_card_files_of_one_name_and_date_both_land(self):
        """IMG_0001.JPG in two folders of the card, taken the same day, copied at the same time
        (concurrent_files 2): both look at the free name while they stream; the second move
        leaves the first's file (moveto alone would replace it) and takes _1."""
        for folder, salt in (("100CANON", b"a"), ("101CANON", b"b")):
            make_photo(f"{self.card}/DCIM/{folder}/IMG_0001.JPG", self.dir,
                       "2023:07:14 18:30:05", salt=salt)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(self.photos(), ["2023/07/14/IMG_0001.JPG", "2023/07/14/IMG_0001_1.JPG"])
        there = {md5(f"{self.remote_dir}/photos/2023/07/14/{n}")
                 for n in ("IMG_0001.JPG", "IMG_0001_1.JPG")}
        self.assertEqual(there, {md5(f"{self.card}/DCIM/{d}/IMG_0001.JPG")
                                 for d in ("100CANON", "101CANON")})

    def test_bad_remote_name_is_shown_clearly(self):
        self.make_card()
        self.configure(remote="nosuchremote:photos")
        p = self.snapsync("test-connection")
        self.assertNotEqual(p.returncode, 0)
        out = p.stdout + p.stderr
        self.assertIn("nosuchremote", out)
        self.assertIn("didn't find section in config file", out)
        r = self.backup(check=None)
        self.assertNotEqual(r["status"], "completed", r)
        self.assertIn("didn't find section in config file", r["error"])

    def test_extra_args_are_options_only(self):
        """An item of extra_args that is not an option (it would become an argument of the
        command: another path) is refused before rclone runs."""
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace("extra_args: [--local-no-preallocate]",
                                 "extra_args: [--local-no-preallocate, /etc]"))
        p = self.snapsync("test-connection")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("rclone.extra_args: '/etc' is not an option", p.stdout + p.stderr)
        self.assertFalse(os.path.exists(self.remote_dir))

    def test_test_connection_writes_and_deletes_a_probe(self):
        p = self.snapsync("test-connection", check=0)
        self.assertIn("a probe file written and deleted", p.stdout + p.stderr)
        self.assertEqual(self.photos(), [])

    def test_killed_run_leaves_no_temporary_after_the_next_prepare(self):
        """SnapSync and its rclone killed (a power cut) while a large file streams: its
        temporary stays behind; the next run's prepare deletes it (its process is gone), and the
        file lands whole. A temporary of another live process of this host and another host's
        fresh one are left alone."""
        path = f"{self.card}/DCIM/100CANON/MVI_0001.MP4"
        make_blob(path, 512 * MIB)
        tmp = os.path.join(self.remote_dir, "photos", ".snapsync-tmp")
        os.makedirs(tmp)
        others = [f"{host_tag()}-{os.getpid()}-0.part", "otherstation-1-0.part"]
        for name in others:
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(b"x")
        p = subprocess.Popen([BIN, "--config", self.config, "backup", self.card],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env,
                             cwd=self.dir, start_new_session=True)
        try:
            wait_for(lambda: len(self.remote_temporaries()) > len(others), 120,
                     "the video's temporary")
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        left = [t for t in self.remote_temporaries() if t not in others]
        self.assertEqual(len(left), 1, left)
        self.assertTrue(left[0].startswith(f"{host_tag()}-{p.pid}-"), left)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(self.remote_temporaries(), sorted(others))
        dated = [f for f in self.photos() if f.endswith("MVI_0001.MP4")]
        self.assertEqual(len(dated), 1, self.photos())
        self.assertEqual(md5(f"{self.remote_dir}/photos/{dated[0]}"), md5(path))

    def rcd_pids(self):
        """Live `rclone rcd` processes of this test (their command line names its rclone.conf);
        a zombie counts as gone."""
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"rcd" in argv and self.rclone_conf.encode() in argv and state != "Z":
                pids.append(int(pid))
        return pids

    def start_video_backup(self):
        """snapsync backup of a card with a 512 MiB video in the background, waited for until the
        video streams into its temporary. Returns the Popen and the video's path."""
        path = f"{self.card}/DCIM/100CANON/MVI_0001.MP4"
        make_blob(path, 512 * MIB)
        p = subprocess.Popen([BIN, "--config", self.config, "backup", self.card, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                             cwd=self.dir, start_new_session=True)
        self.cleanups.append(lambda: p.poll() is None and os.killpg(p.pid, signal.SIGKILL))
        wait_for(lambda: self.remote_temporaries(), 120, "the video's temporary")
        return p, path

    def test_one_rcd_its_password_not_on_its_command_line_none_left_after_the_run(self):
        """One `rclone rcd` serves the whole run: listening on loopback, its user and password in
        its environment and not on its command line (which every user can read); it is gone when
        snapsync exits. A proxy in the environment (which would get the password with every
        call) is not used to reach it."""
        self.make_card()
        self.env["http_proxy"] = self.env["HTTP_PROXY"] = "http://127.0.0.1:9"
        p, video = self.start_video_backup()
        [pid] = self.rcd_pids()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(e.split("=", 1) for e in f.read().decode().split("\0") if "=" in e)
        with open(f"/proc/{pid}/stat") as f:
            self.assertEqual(int(f.read().rsplit(")", 1)[1].split()[1]), p.pid)  # its parent
        self.assertIn("--rc-addr=127.0.0.1:0", argv)
        self.assertGreaterEqual(len(env.get("RCLONE_RC_PASS", "")), 32, env.keys())
        self.assertGreaterEqual(len(env.get("RCLONE_RC_USER", "")), 32, env.keys())
        self.assertFalse([a for a in argv if a.startswith(("--rc-pass", "--rc-user", "--rc-no-auth",
                                                           "--rc-htpasswd"))], argv)
        self.assertFalse([a for a in argv if env["RCLONE_RC_PASS"] in a], argv)
        # it listens on loopback only, and answers nobody without the password
        [(addr, port)] = listening(pid)
        self.assertEqual(addr, "127.0.0.1")
        url = f"http://127.0.0.1:{port}/core/version"
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=30)
        self.assertEqual(cm.exception.code, 401)
        auth = base64.b64encode(f"{env['RCLONE_RC_USER']}:{env['RCLONE_RC_PASS']}".encode())
        with urllib.request.urlopen(urllib.request.Request(
                url, data=b"{}", headers={"Authorization": "Basic " + auth.decode()}),
                timeout=30) as reply:
            self.assertIn("version", json.loads(reply.read()))
        out, err = p.communicate(timeout=300)
        err = err.decode(errors="replace")
        self.assertEqual(p.returncode, 0, err)
        self.assertFalse([m for m in SANITIZER_MARKS if m in err], err)
        r = json.loads(out)
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 3), r)
        self.assertEqual(self.rcd_pids(), [])
        dated = [f for f in self.photos() if f.endswith("MVI_0001.MP4")]
        self.assertEqual(md5(f"{self.remote_dir}/photos/{dated[0]}"), md5(video))

    def test_rcd_killed_mid_file_the_file_fails_clearly_and_the_retry_starts_another(self):
        """The rclone rcd dies while the video streams into it: that copy fails saying how rclone
        ended, the retry starts a new rcd, and the video lands whole, with no temporary left."""
        p, video = self.start_video_backup()
        [pid] = self.rcd_pids()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: [q for q in self.rcd_pids() if q != pid], 120, "another rclone rcd")
        out, err = p.communicate(timeout=300)
        err = err.decode(errors="replace")
        self.assertEqual(p.returncode, 0, err)
        self.assertFalse([m for m in SANITIZER_MARKS if m in err], err)
        r = json.loads(out)
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 1), r)
        self.assertRegex(err, rf"MVI_0001\.MP4.*rclone rcd \(pid {pid}\) was killed by signal 9")
        dated = [f for f in self.photos() if f.endswith("MVI_0001.MP4")]
        self.assertEqual(len(dated), 1, self.photos())
        self.assertEqual(md5(f"{self.remote_dir}/photos/{dated[0]}"), md5(video))
        self.assertEqual(self.remote_temporaries(), [])
        self.assertEqual(self.rcd_pids(), [])

    def test_rcd_dies_with_a_killed_snapsync(self):
        """snapsync killed with SIGKILL (no clean-up of its own): its rclone rcd goes with it
        (PR_SET_PDEATHSIG), not left running with the remote's credentials."""
        p, _ = self.start_video_backup()
        [pid] = self.rcd_pids()
        os.kill(p.pid, signal.SIGKILL)
        p.communicate()
        wait_for(lambda: pid not in self.rcd_pids(), 30, "the rcd to end")

    def test_dry_run_names_the_remote_paths(self):
        self.make_card()
        p = self.snapsync("backup", self.card, "--dry-run", "--json", check=0)
        self.assertIn(f"loc:{self.remote_dir}/photos/2023/07/14/IMG_0001.JPG", p.stdout)
        self.assertEqual(self.photos(), [])


class RcloneS3Test(SnapsyncTest):
    """rclone's S3 backend against s3rver: the same remote SnapSync's own S3 backend uses."""

    def setUp(self):
        super().setUp()
        self.server = S3rver(self.dir)
        self.cleanups.append(self.server.stop)
        for k in [k for k in self.env if k.startswith(("RCLONE_", "AWS_"))]:
            del self.env[k]
        self.s3env = dict(RCLONE_CONFIG_T_TYPE="s3", RCLONE_CONFIG_T_PROVIDER="Other",
                          RCLONE_CONFIG_T_ENDPOINT=self.server.url,
                          RCLONE_CONFIG_T_ACCESS_KEY_ID=KEY_ID,
                          RCLONE_CONFIG_T_SECRET_ACCESS_KEY=SECRET,
                          RCLONE_CONFIG_T_FORCE_PATH_STYLE="true")
        self.env.update(self.s3env, RCLONE_CONFIG="/dev/null")
        rclone_alone(self, f"t:{BUCKET}/via-rclone")

    def rclone(self, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        env.update(self.s3env, RCLONE_CONFIG="/dev/null")
        p = subprocess.run([tool("rclone"), *args], env=env, capture_output=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        return p.stdout.decode()

    def objects(self):
        out = self.rclone("lsjson", "-R", "--files-only", f"t:{BUCKET}/via-rclone")
        return {o["Path"]: o["Size"] for o in json.loads(out)}

    def test_card_to_bucket_through_rclone_then_rerun_copies_nothing(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_blob(f"{self.card}/DCIM/100CANON/MVI_0002.MP4", 7 * MIB + 3)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 2, r)
        objects = self.objects()
        self.assertEqual(objects.get("2023/07/14/IMG_0001.JPG"),
                         os.path.getsize(f"{self.card}/DCIM/100CANON/IMG_0001.JPG"), objects)
        videos = [k for k in objects if k.endswith("/MVI_0002.MP4")]
        self.assertEqual(len(videos), 1, objects)
        self.assertRegex(videos[0], r"^\d{4}/\d{2}/\d{2}/MVI_0002\.MP4$")
        self.assertEqual(len(objects), 2, objects)  # no temporary left in .snapsync-tmp
        for key, rel in (("2023/07/14/IMG_0001.JPG", "DCIM/100CANON/IMG_0001.JPG"),
                         (videos[0], "DCIM/100CANON/MVI_0002.MP4")):
            got = self.rclone("md5sum", "--download", f"t:{BUCKET}/via-rclone/{key}").split()[0]
            self.assertEqual(got, md5(f"{self.card}/{rel}"), key)
        r = self.backup()
        self.assertEqual(r["files_copied"], 0, r)
        self.assertEqual(self.objects(), objects)

    def test_other_content_in_the_bucket_gets_1(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        other = b"another station's photo"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        env.update(self.s3env, RCLONE_CONFIG="/dev/null")
        subprocess.run([tool("rclone"), "rcat", f"t:{BUCKET}/via-rclone/2023/07/14/IMG_0001.JPG"],
                       input=other, env=env, check=True, timeout=60)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        objects = self.objects()
        self.assertEqual(objects["2023/07/14/IMG_0001.JPG"], len(other))
        got = self.rclone("md5sum", "--download",
                          f"t:{BUCKET}/via-rclone/2023/07/14/IMG_0001_1.JPG").split()[0]
        self.assertEqual(got, md5(f"{self.card}/DCIM/100CANON/IMG_0001.JPG"))
        self.assertEqual(hashlib.md5(other).hexdigest(), self.rclone(
            "md5sum", "--download", f"t:{BUCKET}/via-rclone/2023/07/14/IMG_0001.JPG").split()[0])


    def test_a_byte_changed_on_the_way_to_the_server_is_caught(self):
        """A relay between rclone and s3rver changes one bit of the photo on its way: the copy
        fails (rclone's own check of the upload, else SnapSync's of the remote object's MD5)
        and nothing lands under its final name; the next run (the relay changes nothing more)
        copies it whole and leaves no temporary."""
        from broker import FlipRelay
        pattern = b"SNAPSYNC-FLIP-ME"
        path = f"{self.card}/DCIM/100CANON/IMG_0030.JPG"
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(os.urandom(100 << 10) + pattern * 4096 + os.urandom(100 << 10))
        relay = FlipRelay(self.server, pattern)
        self.cleanups.append(relay.stop)
        self.env["RCLONE_CONFIG_T_ENDPOINT"] = f"http://127.0.0.1:{relay.port}"
        self.no_retries()
        p = self.snapsync("backup", self.card, "--json", check=1)
        r = json.loads(p.stdout)
        self.assertEqual(relay.flipped, [pattern])
        self.assertEqual((r["files_copied"], r["files_failed"]), (0, 1), p.stderr)
        self.assertRegex(p.stderr, r"IMG_0030\.JPG.*(differ|MD5|md5|corrupt)")
        self.assertEqual([k for k in self.objects() if not k.startswith(".snapsync-tmp/")], [])
        r = self.backup()
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 1), r)
        objects = self.objects()
        [key] = [k for k in objects if k.endswith("/IMG_0030.JPG")]
        self.assertEqual(len(objects), 1, objects)  # no temporary left
        got = self.rclone("md5sum", "--download", f"t:{BUCKET}/via-rclone/{key}").split()[0]
        self.assertEqual(got, md5(path))


class RcloneSftpTest(SnapsyncTest):
    """rclone's sftp backend against OpenSSH on loopback: hashes through md5sum over ssh."""

    def setUp(self):
        super().setUp()
        self.sshd = Sshd(self.dir)
        self.cleanups.append(self.sshd.stop)
        for k in [k for k in self.env if k.startswith("RCLONE_")]:
            del self.env[k]
        known = os.path.join(self.dir, "known_hosts")
        with open(known, "w") as f:
            f.write(self.sshd.known_hosts_line)
        conf = os.path.join(self.dir, "rclone.conf")
        with open(conf, "w") as f:
            f.write(f"[nas]\ntype = sftp\nhost = 127.0.0.1\nport = {self.sshd.port}\n"
                    f"user = {self.sshd.user}\nkey_file = {self.sshd.client_key}\n"
                    f"known_hosts_file = {known}\n")
        os.chmod(conf, 0o600)
        self.remote_dir = os.path.join(self.dir, "nas")
        rclone_alone(self, f"nas:{self.remote_dir}/photos", conf)

    def test_card_over_sftp_verified_collision_gets_1_rerun_copies_nothing(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2023:07:15 09:00:00")
        os.makedirs(f"{self.remote_dir}/photos/2023/07/15")
        with open(f"{self.remote_dir}/photos/2023/07/15/IMG_0002.JPG", "wb") as f:
            f.write(b"the NAS's own file")
        p = self.snapsync("test-connection", check=0)
        self.assertIn("a probe file written and deleted", p.stdout + p.stderr)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(r["files_copied"], 2, r)
        root = f"{self.remote_dir}/photos"
        self.assertEqual(md5(f"{root}/2023/07/14/IMG_0001.JPG"),
                         md5(f"{self.card}/DCIM/100CANON/IMG_0001.JPG"))
        self.assertEqual(md5(f"{root}/2023/07/15/IMG_0002_1.JPG"),
                         md5(f"{self.card}/DCIM/100CANON/IMG_0002.JPG"))
        with open(f"{root}/2023/07/15/IMG_0002.JPG", "rb") as f:
            self.assertEqual(f.read(), b"the NAS's own file")
        self.assertEqual(os.listdir(f"{root}/.snapsync-tmp"), [])
        # the copies are found again by their MD5 over ssh: a fresh database adds nothing
        os.unlink(self.db)
        r = self.backup()
        self.assertEqual(r["status"], "completed", r)
        self.assertEqual(sorted(os.listdir(f"{root}/2023/07/15")),
                         ["IMG_0002.JPG", "IMG_0002_1.JPG"])
        self.assertEqual(os.listdir(f"{root}/2023/07/14"), ["IMG_0001.JPG"])


class RcloneWebdavTest(SnapsyncTest):
    """rclone's webdav backend, which has no streaming upload (PutStream), against rclone's own
    WebDAV server on loopback. Given a stream of unknown length, rclone would first spool the file
    to a temporary file of its own; SnapSync tells it the size, so nothing is spooled: the test
    gives rclone a TMPDIR that does not exist."""

    def setUp(self):
        super().setUp()
        for k in [k for k in self.env if k.startswith("RCLONE_")]:
            del self.env[k]
        self.remote_dir = os.path.join(self.dir, "dav")
        os.makedirs(self.remote_dir)
        port = free_port()
        self.server = subprocess.Popen(
            [tool("rclone"), "serve", "webdav", self.remote_dir, "--addr", f"127.0.0.1:{port}",
             "--config", "/dev/null"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cleanups.append(self.server.wait)
        self.cleanups.append(self.server.kill)
        wait_for(lambda: ("127.0.0.1", port) in listening(self.server.pid), 30, "the WebDAV server")
        conf = os.path.join(self.dir, "rclone.conf")
        with open(conf, "w") as f:
            f.write(f"[dav]\ntype = webdav\nurl = http://127.0.0.1:{port}/\nvendor = other\n")
        rclone_alone(self, "dav:photos", conf)
        self.env["TMPDIR"] = os.path.join(self.dir, "no-such-dir")

    def test_a_backend_without_streaming_uploads_gets_the_file_without_spooling(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2023:07:14 18:30:05")
        video = f"{self.card}/DCIM/100CANON/MVI_0002.MP4"
        make_blob(video, 7 * MIB + 3)
        r = self.backup()
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 2), r)
        root = f"{self.remote_dir}/photos"
        self.assertEqual(md5(f"{root}/2023/07/14/IMG_0001.JPG"),
                         md5(f"{self.card}/DCIM/100CANON/IMG_0001.JPG"))
        [dated] = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                   if f == "MVI_0002.MP4"]
        self.assertEqual(md5(dated), md5(video))
        self.assertEqual(os.listdir(f"{root}/.snapsync-tmp"), [])
        r = self.backup()
        self.assertEqual((r["status"], r["files_copied"]), ("completed", 0), r)


if __name__ == "__main__":
    import unittest
    unittest.main()
