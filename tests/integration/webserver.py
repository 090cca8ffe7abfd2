# SPDX-License-Identifier: MIT
"""`snapsync web` for tests: started on 127.0.0.1 with a port the OS picks, talked to over
real HTTP (http.client: no proxy from the environment gets in the way), stopped by its pid.
Standard library only."""

import http.client
import json
import os
import re
import signal
import subprocess
import time

from harness import BIN, SANITIZER_MARKS


class WebServer:
    def __init__(self, test, extra_args=()):
        self.test = test
        self.log_path = os.path.join(test.dir, "web.log")
        self.log = open(self.log_path, "w")
        cmd = [BIN, "--config", test.config, "web", "--port", "0", *extra_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env=test.env, cwd=test.dir)
        self.port = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.port is None and self.proc.poll() is None:
            with open(self.log_path) as f:
                m = re.search(r"web dashboard on http://[^ ]*:(\d+)/", f.read())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.02)
        if self.port is None:
            self.stop()
            with open(self.log_path) as f:
                raise AssertionError(f"snapsync web did not start:\n{f.read()}")
        self.url = f"http://127.0.0.1:{self.port}"
        self.await_ready(deadline)

    def await_ready(self, deadline):
        """The port is open before the first status document is built (503 "starting"): wait
        for it, so that no test depends on how fast the sampler thread runs."""
        while True:
            st, _, data = self.request("GET", "/api/status")
            if st != 503:
                return
            if time.monotonic() > deadline or not self.alive():
                self.stop()
                raise AssertionError(f"snapsync web never became ready: {st} {data[:200]!r}")
            time.sleep(0.02)

    def request(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers dict with lower-case names, body bytes)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            h = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                h.setdefault("Content-Type", "application/json")
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def get_json(self, path, status=200):
        st, h, data = self.request("GET", path)
        self.test.assertEqual(st, status, f"GET {path}: {st} {data[:300]!r}")
        self.test.assertEqual(h.get("content-type"), "application/json")
        return json.loads(data)

    def action(self, path, headers=None, body=b"{}"):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        st, _, data = self.request("POST", path, body=body, headers=h)
        return st, json.loads(data) if data else None

    def wait_status(self, predicate, timeout=30, what="a status"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.get_json("/api/status")
            if predicate(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last status: {last}")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("snapsync web did not stop on SIGTERM within 30 s")
        self.log.close()
        with open(self.log_path) as f:
            text = f.read()
        for mark in SANITIZER_MARKS:
            self.test.assertNotIn(mark, text, f"sanitizer report from snapsync web:\n{text}")
        return self.proc.returncode
