# SPDX-License-Identifier: MIT
"""The CLI around the backup: help, version, config printing, template, test-connection, the
live progress on a terminal and through a pipe, the exit status after a signal."""

import fcntl
import json
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import termios

from harness import BIN, SnapsyncTest, make_blob, wait_for, write_config

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROGRESS = re.compile(r"\d+%  \d+/\d+ files")


def render(raw):
    """What a terminal wide enough shows for raw output: the final text of each line (\\r returns
    to the first column, ESC[K erases to the end of the line), and the widest column written."""
    lines, cur, col, widest, i = [], [], 0, 0, 0
    while i < len(raw):
        m = ESCAPE.match(raw, i)
        if m:
            if m.group(0) == "\x1b[K":
                del cur[col:]
            i = m.end()
            continue
        ch = raw[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            if col < len(cur):
                cur[col] = ch
            else:
                cur.append(ch)
            col += 1
            widest = max(widest, col)
    if cur:
        lines.append("".join(cur))
    return lines, widest


class CliTest(SnapsyncTest):
    def test_help_and_version(self):
        self.assertIn("usage: snapsync", self.snapsync("--help", config=False, check=0).stdout)
        self.assertRegex(self.snapsync("--version", config=False, check=0).stdout,
                         r"^snapsync \d+\.\d+\.\d+")
        for cmd in ("backup", "status", "sessions", "config"):
            self.assertIn("usage:", self.snapsync(cmd, "--help", check=0).stdout)
        self.snapsync("no-such-command", check=2)
        self.snapsync("sessions", "-n", "zero", check=2)

    def test_template_validates_as_is_and_equals_the_default(self):
        tpl = self.snapsync("config", "--template", config=False, check=0).stdout
        path = os.path.join(self.dir, "template.yaml")
        with open(path, "w") as f:
            f.write(tpl)
        from_template = self.snapsync("--config", path, "config", config=False, check=0).stdout
        os.remove(self.config)  # nothing in the working directory: the embedded default
        default = self.snapsync("config", config=False, check=0).stdout
        def strip(text):
            return "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        self.assertEqual(strip(from_template).replace(self.dir + "/", "./"),
                         strip(default))

    def test_secrets_are_masked_and_env_wins(self):
        with open(self.config, "a") as f:
            f.write("mqtt:\n  enabled: false\n  password: yaml-secret-123\n")
        with open(os.path.join(self.dir, ".env"), "w") as f:
            f.write("MQTT_PASSWORD=dotenv-secret-456\n")
        os.chmod(os.path.join(self.dir, ".env"), 0o644)
        p = self.snapsync("config", check=0)
        self.assertNotIn("yaml-secret-123", p.stdout + p.stderr)
        self.assertNotIn("dotenv-secret-456", p.stdout + p.stderr)
        self.assertIn("********", p.stdout)
        self.assertIn("readable by other", p.stderr)

    def test_config_prints_one_header(self):
        out = self.snapsync("config", check=0).stdout
        self.assertEqual(sum(1 for line in out.splitlines() if "effective configuration" in line),
                         1, out)
        head = out.split("\n\n")[0]  # then the example paths, as comments
        self.assertEqual(sum(1 for line in head.splitlines() if line.startswith("#")), 2, out)

    def test_config_json_parses_and_does_not_escape_slashes(self):
        with open(self.config, "a") as f:
            f.write("mqtt:\n  enabled: false\n  password: yaml-secret-123\n")
        out = self.snapsync("config", "--json", check=0).stdout
        self.assertNotIn("\\/", out)
        self.assertNotIn("yaml-secret-123", out)
        c = json.loads(out)
        self.assertEqual(c["path"], self.config)
        self.assertEqual(c["service"]["database_path"], self.db)
        self.assertEqual(c["mqtt"]["password"], "********")
        self.assertIsInstance(c["files"]["extensions"], list)
        self.snapsync("config", "--json", "--template", check=2)

    def test_test_connection_json(self):
        out = self.snapsync("test-connection", "--json", check=0).stdout
        self.assertNotIn("\\/", out)
        r = json.loads(out)
        self.assertTrue(r["ok"])
        self.assertEqual([(c["name"], c["ok"]) for c in r["checks"]], [("local", True)])
        self.assertIn(self.dest, r["checks"][0]["detail"])
        with open(self.config) as f:
            text = f.read().replace(f"mount_point: {self.dest}", f"mount_point: {self.dest}-file")
        with open(self.dest + "-file", "w") as f:
            f.write("x")
        with open(self.config, "w") as f:
            f.write(text)
        r = json.loads(self.snapsync("test-connection", "--json", check=1).stdout)
        self.assertFalse(r["ok"])
        self.assertFalse(r["checks"][0]["ok"])

    def test_backup_json_does_not_escape_slashes(self):
        make_blob(f"{self.card}/DCIM/CLIP.MP4", 1 << 20)
        p = self.snapsync("backup", self.card, "--json", check=0)
        self.assertNotIn("\\/", p.stdout)
        self.assertEqual(json.loads(p.stdout)["files_copied"], 1)
        for args in (["status", "--json"], ["sessions", "--json"]):
            out = self.snapsync(*args, check=0).stdout
            self.assertNotIn("\\/", out)
            self.assertIn(self.card, out)

    def test_test_connection_local(self):
        p = self.snapsync("test-connection", check=0)
        self.assertRegex(p.stdout, r"^OK +local")
        with open(self.dest + "-file", "w") as f:
            f.write("x")
        with open(self.config) as f:
            text = f.read().replace(f"mount_point: {self.dest}", f"mount_point: {self.dest}-file")
        with open(self.config, "w") as f:
            f.write(text)
        p = self.snapsync("test-connection", check=1)
        self.assertRegex(p.stdout, r"^FAIL ")


class ProgressTest(SnapsyncTest):
    """The live progress of `snapsync backup`: in a real pseudo-terminal of a set width, through
    a file, and how a signal ends it."""

    FILES = 10

    def setUp(self):
        super().setUp()
        for i in range(self.FILES):
            make_blob(f"{self.card}/DCIM/CLIP{i}.MP4", 24 << 20)
        # one file at a time, so the progress moves through the session
        write_config(self.config, self.dest, self.db, backup="  concurrent_files: 1\n")

    def run_in_pty(self, columns):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        p = subprocess.Popen([BIN, "--config", self.config, "backup", self.card], stdin=slave,
                             stdout=slave, stderr=slave, env=self.env, cwd=self.dir)
        os.close(slave)
        chunks = []
        try:
            while True:
                ready, _, _ = select.select([master], [], [], 120)
                self.assertTrue(ready, "no output from the backup for 120 s")
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the backup exited and closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
        self.assertEqual(p.wait(timeout=120), 0)
        return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")

    def test_progress_fits_a_narrow_terminal_with_log_lines_above_it(self):
        columns = 40
        raw = self.run_in_pty(columns)
        lines, _ = render(raw)
        # every drawing of the progress fits in one row: it never wraps, so never scrolls
        draws = [d for d in re.findall(r"\r\x1b\[K([^\r\n]*)", raw)
                 if PROGRESS.match(d) or d.startswith("scanning")]
        self.assertGreater(len(draws), 2, raw)
        for d in draws:
            self.assertLess(len(d), columns, f"a progress line wider than the terminal:\n{raw!r}")
        # what stays on screen: the log lines and the summary, no leftover of the progress
        self.assertEqual(len(lines), len([x for x in raw.split("\n") if x]), raw)
        self.assertRegex(raw, r"\r\x1b\[K\d+%  \d+/\d+ files", "the progress is not redrawn")
        self.assertGreater(len(re.findall(r"\r\x1b\[K\d+%", raw)), 1, raw)
        # the log lines start their own line, and no progress is glued to them
        logs = [line for line in lines if re.search(r"(info|warning|error): ", line)]
        self.assertTrue(logs, raw)
        for line in logs:
            self.assertRegex(line, r"^(info|warning|error): ", raw)
            self.assertNotRegex(line, PROGRESS, raw)
        # a log line written while the progress was shown went above it: the progress came back
        first_progress = PROGRESS.search(raw).start()
        self.assertRegex(raw[first_progress:], r"\r\x1b\[K(info|warning|error): [^\r]*\n"
                         r"\r\x1b\[K\d+%", raw)
        # the progress is gone at the end: the last lines are the summary
        self.assertRegex(lines[-1], rf"^session \d+ completed: {self.FILES} files", raw)
        self.assertNotRegex("\n".join(lines), PROGRESS)

    def start_held(self, stderr):
        p = subprocess.Popen([BIN, "--config", self.config, "backup", self.card],
                             stdout=subprocess.PIPE, stderr=stderr, env=self.env, cwd=self.dir)
        self.cleanups.append(lambda: p.poll() is None and (p.kill(), p.wait()))
        wait_for(lambda: self.temporaries(), 60, "the first copy to start")
        p.send_signal(signal.SIGSTOP)
        return p

    def test_progress_through_a_file_is_plain_lines(self):
        log = os.path.join(self.dir, "stderr.txt")
        with open(log, "wb") as err:
            p = self.start_held(err)
        # one file of ten done is 10 %: the next report prints a line
        self.let_one_more_file_finish(p)
        p.send_signal(signal.SIGCONT)
        out, _ = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0)
        with open(log, "rb") as f:
            text = f.read().decode()
        self.assertNotIn("\r", text)
        self.assertNotIn("\x1b", text)
        progress = [line for line in text.splitlines() if line.startswith("progress: ")]
        self.assertTrue(progress, text)
        for line in progress:
            self.assertRegex(line, r"^progress: \d+%  \d+/10 files  ")
        self.assertLessEqual(len(progress), 10, text)  # every 10 %, not every report
        self.assertIn(b"completed", out)

    def interrupted_by(self, sig, status):
        p = self.start_held(subprocess.DEVNULL)
        p.send_signal(sig)
        p.send_signal(signal.SIGCONT)
        out, _ = p.communicate(timeout=120)
        self.assertEqual(p.returncode, status, out)
        con = sqlite3.connect(self.db)
        try:
            self.assertEqual(con.execute("select status from sessions").fetchall(),
                             [("interrupted",)])
        finally:
            con.close()
        self.assertIn(b"interrupted", out)
        self.assertEqual(self.temporaries(), [])

    def test_ctrl_c_exits_130_and_records_the_session_interrupted(self):
        self.interrupted_by(signal.SIGINT, 130)

    def test_sigterm_exits_143_and_records_the_session_interrupted(self):
        self.interrupted_by(signal.SIGTERM, 143)
