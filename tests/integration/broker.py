# SPDX-License-Identifier: MIT
"""A real mosquitto broker on 127.0.0.1 and a free port, and a subscriber that records every
message, for the MQTT tests. Started and stopped by the test; waits have deadlines."""

import hashlib
import os
import re
import socket
import subprocess
import tempfile
import threading
import time

from harness import tool


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(folder, name):
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl). Returns
    (ca.pem, server.pem, server.key)."""
    openssl = tool("openssl")
    ca, ca_key = os.path.join(folder, f"{name}-ca.pem"), os.path.join(folder, f"{name}-ca.key")
    crt, key = os.path.join(folder, f"{name}-server.pem"), os.path.join(folder, f"{name}-server.key")
    csr, ext = os.path.join(folder, f"{name}.csr"), os.path.join(folder, f"{name}.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
                    "-out", ca, "-days", "2", "-subj", f"/CN={name} test CA"], **quiet)
    subprocess.run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", "/CN=127.0.0.1"], **quiet)
    subprocess.run([openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext], **quiet)
    return ca, crt, key


class Broker:
    def __init__(self, workdir, user=None, password=None, tls=False):
        self.dir = tempfile.mkdtemp(prefix="mosquitto.", dir=workdir)
        self.port = free_port()
        conf = os.path.join(self.dir, "mosquitto.conf")
        lines = [f"listener {self.port} 127.0.0.1", "persistence false"]
        self.ca = None
        if tls:
            self.ca, crt, key = make_ca(self.dir, "broker")
            lines += [f"cafile {self.ca}", f"certfile {crt}", f"keyfile {key}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto', who cannot read our files
        if user:
            pwfile = os.path.join(self.dir, "passwd")
            subprocess.run([tool("mosquitto_passwd"), "-c", "-b", pwfile, user, password],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.chmod(pwfile, 0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines += ["allow_anonymous true"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.conf = conf
        self.log = open(os.path.join(self.dir, "mosquitto.log"), "w")
        self.launch()

    def launch(self):
        self.proc = subprocess.Popen([tool("mosquitto"), "-c", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto did not start; see {self.log.name}")
                time.sleep(0.02)

    def halt(self):
        """Stops the broker: SIGTERM, and SIGKILL when it has not gone 10 s later (a CI run on a
        loaded machine once saw mosquitto outlast 10 s after SIGTERM)."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self):
        """Stops the broker and starts it again on the same port (retained messages are lost:
        persistence is off, as after a broker crash)."""
        self.halt()
        self.launch()

    def stop(self):
        self.halt()
        if not self.log.closed:
            self.log.close()

    def client_args(self):
        return ["--cafile", self.ca] if self.ca else []

    def publish(self, topic, payload, retain=False, user=None, password=None):
        cmd = [tool("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(self.port), "-t", topic,
               "-m", payload, "-q", "1"] + self.client_args()
        if retain:
            cmd.append("-r")
        if user:
            cmd += ["-u", user, "-P", password]
        subprocess.run(cmd, check=True, timeout=20)


class Subscriber:
    """mosquitto_sub on '#', every message kept as (retained, topic, payload)."""

    def __init__(self, broker, user=None, password=None):
        self.broker = broker
        self.messages = []
        self.cond = threading.Condition()
        cmd = [tool("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port), "-v", "-t", "#",
               "-F", "%r\t%t\t%p", "-q", "1"] + broker.client_args()
        if user:
            cmd += ["-u", user, "-P", password]
        self.auth = (user, password)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        # ready when our own marker comes back
        marker = f"ready/{os.getpid()}/{time.monotonic_ns()}"
        deadline = time.monotonic() + 20
        while not self.find(marker):
            if time.monotonic() > deadline:
                raise AssertionError("mosquitto_sub did not subscribe")
            broker.publish(marker, "x", user=user, password=password)
            self.wait(lambda: self.find(marker), 0.5, raise_=False)

    def _read(self):
        for line in self.proc.stdout:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) != 3:
                continue
            with self.cond:
                self.messages.append((parts[0] == "1", parts[1], parts[2]))
                self.cond.notify_all()

    def find(self, topic):
        with self.cond:
            return [m for m in self.messages if m[1] == topic]

    def wait(self, predicate, timeout=30, what="message", raise_=True):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    if raise_:
                        raise AssertionError(f"timed out waiting for {what}")
                    return False
                self.cond.wait(left)
        return True

    def stop(self):
        # mosquitto_sub disconnects cleanly on SIGTERM, which can outlast 10 s on a loaded
        # machine while its broker restarts: then it is killed
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class CutProxy:
    """A TCP relay on 127.0.0.1 in front of the broker: while up, each connection is passed on;
    cut() drops every connection and refuses new ones (accepted and closed at once) until
    restore(). The client behind it loses the broker while others, connected to the broker
    itself, keep hearing what it publishes. Any server with a `port` on 127.0.0.1 will do;
    upstream (optional) is applied to every piece the client sends, called under the relay's
    lock: it returns what goes on instead (test_smb.py changes a byte on the way to smbd);
    downstream (optional) the same for every piece the server sends."""

    def __init__(self, broker, upstream=None, downstream=None):
        self.target = ("127.0.0.1", broker.port)
        self.upstream = upstream
        self.downstream = downstream
        self.up = True
        self.lock = threading.Lock()
        self.conns = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # stopped
            with self.lock:
                if not self.up:
                    client.close()
                    continue
                try:
                    server = socket.create_connection(self.target, timeout=10)
                except OSError:
                    client.close()
                    continue
                self.conns += [client, server]
            for a, b, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, src, dst, up):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                change = self.upstream if up else self.downstream
                if change:
                    with self.lock:
                        data = change(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            self.up = False
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns = []

    def restore(self):
        with self.lock:
            self.up = True

    def stop(self):
        self.cut()
        self.listener.close()


class FlipRelay(CutProxy):
    """A TCP relay on 127.0.0.1 in front of a server that changes one bit of the first
    occurrence of each of `patterns` in what the client sends (a copy then differs from the card
    by one byte, as a bad cable, NAS or proxy would make it); everything else passes as is.
    `flipped` lists the patterns changed so far."""

    def __init__(self, server, *patterns):
        self.patterns = patterns
        self.flipped = []
        super().__init__(server, upstream=self._flip)

    def _flip(self, data):
        for pattern in self.patterns:
            at = data.find(pattern) if pattern not in self.flipped else -1
            if at >= 0:
                self.flipped.append(pattern)
                data = bytearray(data)
                data[at + 5] ^= 0x01
                data = bytes(data)
        return data


class EtagRelay(FlipRelay):
    """A FlipRelay in front of an S3 server whose ETags the client never sees: every ETag the
    server sends (an `ETag:` header, an <ETag> in XML) becomes another 32-hex value, as with a
    bucket encrypted with KMS, whose ETags are not MD5s; the client's own mentions of those
    (the part list of CompleteMultipartUpload) go to the server as its real ones. Each stays the
    same length, so Content-Length holds. `rewritten` counts the ETags changed."""

    DOWN = re.compile(rb'(?i)(etag:[ \t]*"?|<ETag>(?:"|&quot;)?)([0-9a-f]{32})')
    UP = re.compile(rb'(<ETag>(?:"|&quot;)?)([0-9a-f]{32})')

    def __init__(self, server, *patterns):
        self.real = {}  # the client's ETag -> the server's
        self.rewritten = 0
        super().__init__(server, *patterns)
        self.downstream = self._down

    def _down(self, data):
        def fake(m):
            real = m.group(2)
            other = hashlib.sha256(b"kms:" + real).hexdigest()[:32].encode()
            self.real[other] = real
            self.rewritten += 1
            return m.group(1) + other
        return self.DOWN.sub(fake, data)

    def _flip(self, data):
        data = super()._flip(data)
        return self.UP.sub(lambda m: m.group(1) + self.real.get(m.group(2), m.group(2)), data)
