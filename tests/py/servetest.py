"""Helpers for the tests of `chexnet serve` (not a test itself).

  Server(args...)  starts `chexnet serve --port 0 ...` on loopback, reads the
                   "listening on http://HOST:P" line; .url, .port, .proc;
                   .stop() sends SIGTERM and waits (a context manager, and
                   every server still running at exit is killed)
  request(...)     one HTTP request with http.client: (status, headers, body)
  expect_continue(...)  the status answered to the headers of a large POST
  free_port()      a TCP port free on 127.0.0.1 right now
"""
import atexit
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import time

import cxtest

_RUNNING = []


@atexit.register
def _kill_all():
    for p in list(_RUNNING):
        if p.poll() is None:
            p.kill()
            p.wait()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, *args, timeout=60, env=None, expect_fail=False):
        self.args = [cxtest.CHEXNET, "serve", "--port", "0"] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env)
        _RUNNING.append(self.proc)
        self.line = ""
        self.url = None
        if expect_fail:
            return
        deadline = time.time() + timeout
        buf = b""
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                ch = os.read(self.proc.stdout.fileno(), 4096)
                if not ch:
                    break
                buf += ch
                if b"\n" in buf:
                    break
            elif self.proc.poll() is not None:
                break
        self.line = buf.decode(errors="replace").strip()
        m = re.fullmatch(r"listening on http://(\S+):(\d+)", self.line)
        if not m:
            err = self.proc.stderr.read1(8192).decode(errors="replace") \
                if self.proc.poll() is not None else ""
            self.stop()
            raise SystemExit("chexnet serve did not start: %r %s" % (self.line, err))
        self.host, self.port = m.group(1).strip("[]"), int(m.group(2))
        self.url = "http://%s:%d" % (m.group(1), self.port)

    def request(self, method, path, body=None, headers=None, timeout=120, chunked=False):
        return request(self.host, self.port, method, path, body, headers, timeout, chunked)

    def predict(self, body, query="", headers=None):
        st, hd, data = self.request("POST", "/v1/predict" + query, body, headers)
        try:
            return st, json.loads(data)
        except ValueError:
            return st, {"raw": data[:200]}

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc in _RUNNING:
            _RUNNING.remove(self.proc)
        out = self.proc.stdout.read().decode(errors="replace")
        err = self.proc.stderr.read().decode(errors="replace")
        return self.proc.returncode, out, err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def expect_continue(host, port, path, length, headers=None, timeout=60):
    """Sends only the headers of a POST of `length` bytes with "Expect:
    100-continue" (as curl does for large bodies) and returns the status the
    server answers with before the body (100 means: send it)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        s.sendall(("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n"
                   "Expect: 100-continue\r\n%s\r\n" % (path, host, length, h)).encode())
        data = b""
        while b"\r\n" not in data:
            ch = s.recv(4096)
            if not ch:
                break
            data += ch
        line = data.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else None
    finally:
        s.close()


def request(host, port, method, path, body=None, headers=None, timeout=120, chunked=False):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        h = dict(headers or {})
        if chunked:
            c.putrequest(method, path)
            for k, v in h.items():
                c.putheader(k, v)
            c.putheader("Transfer-Encoding", "chunked")
            c.endheaders()
            for i in range(0, len(body), 65536):
                part = body[i:i + 65536]
                try:
                    c.send(b"%x\r\n%s\r\n" % (len(part), part))
                except OSError:
                    break  # the server answered and closed early
            try:
                c.send(b"0\r\n\r\n")
            except OSError:
                pass
        else:
            c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()
