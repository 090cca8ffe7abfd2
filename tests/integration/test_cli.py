"""The CLI around the backup: help, version, config printing, template, test-connection."""

import os

from harness import SnapsyncTest


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
