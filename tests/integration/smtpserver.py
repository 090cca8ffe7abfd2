# SPDX-License-Identifier: MIT
"""An SMTP server for tests, on Debian's python3-aiosmtpd: STARTTLS (required) or implicit TLS
or plain, AUTH checked against one user, every message received written to OUT/<n>.eml with its
envelope in OUT/<n>.json. Prints "ready" once it accepts connections.

    smtpserver.py --port P --out DIR [--mode starttls|tls|plain] [--cert PEM --key PEM]
                  [--user U --password P] [--rcpt-reply "451 4.3.0 try later"]

Run by tests/integration/test_notify.py through SmtpServer; standard library + aiosmtpd."""

import argparse
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out, rcpt_reply):
        self.out = out
        self.rcpt_reply = rcpt_reply
        self.n = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(self.out, str(self.n))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "tls": session.ssl is not None,
                       "auth": session.auth_data.login.decode() if session.auth_data else None},
                      f)
        os.rename(base + ".eml.tmp", base + ".eml")  # the test waits for the .eml
        return "250 Message accepted"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="starttls", choices=("starttls", "tls", "plain"))
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--rcpt-reply")
    a = ap.parse_args()

    ctx = None
    if a.mode != "plain":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == a.user
              and auth_data.password.decode() == a.password)
        # handled=False: aiosmtpd answers 535 itself (True would leave the client waiting)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    kw = {}
    if a.user:
        kw.update(authenticator=authenticator, auth_required=True,
                  auth_require_tls=a.mode != "tls")  # implicit TLS: the whole session is TLS
    if a.mode == "starttls":
        kw.update(tls_context=ctx, require_starttls=True)
    controller = Controller(Handler(a.out, a.rcpt_reply), hostname="127.0.0.1", port=a.port,
                            ssl_context=ctx if a.mode == "tls" else None, **kw)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
