# SPDX-License-Identifier: MIT
"""A private OpenSSH server for integration tests (the rclone destination's sftp remote):
Debian's sshd on 127.0.0.1, a free port, with its own sshd_config, host key and authorized key
under the test's folder; only public-key login of the user running the tests (root in CI). Its
privilege separation folder /run/sshd is made when missing. Started as `sshd -D -e` (in the
foreground, logging to its stderr, a file here), ready when it logs that it listens; stopped by
PID. Standard library only; every wait has a deadline."""

import getpass
import os
import shutil
import subprocess

from harness import free_port, tool, wait_for


class Sshd:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "sshd")
        os.makedirs(self.dir, mode=0o700)
        self.user = getpass.getuser()
        self.host_key = os.path.join(self.dir, "host_ed25519")
        self.client_key = os.path.join(self.dir, "client_ed25519")
        for key in (self.host_key, self.client_key):
            subprocess.run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", key],
                           check=True, timeout=60)
        authorized = os.path.join(self.dir, "authorized_keys")
        with open(self.client_key + ".pub") as src, open(authorized, "w") as dst:
            dst.write(src.read())
        os.chmod(authorized, 0o600)
        self.port = free_port()
        conf = os.path.join(self.dir, "sshd_config")
        with open(conf, "w") as f:
            f.write(f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {self.host_key}\n"
                    f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                    f"PermitRootLogin prohibit-password\nAllowUsers {self.user}\n"
                    f"PidFile {self.dir}/sshd.pid\nSubsystem sftp internal-sftp\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with open(self.host_key + ".pub") as f:
            self.known_hosts_line = f"[127.0.0.1]:{self.port} {f.read().strip()}\n"
        self.log = os.path.join(self.dir, "sshd.log")
        with open(self.log, "w") as log:
            sshd = shutil.which("sshd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
            if not sshd:
                raise AssertionError("sshd is not installed (scripts/deps.sh --test installs it)")
            self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", conf],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd exited:\n{self.text()}")
            return f"Server listening on 127.0.0.1 port {self.port}" in self.text()
        wait_for(listening, 30, "sshd to listen")

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
