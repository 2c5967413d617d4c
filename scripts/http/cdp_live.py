"""Drives a headless chromium over the DevTools protocol (stdlib only: a minimal WebSocket client) to check that
the sparkd dashboard updates live from /events, and saves a screenshot of the live page.

Usage: cdp_live.py CHROMIUM USER_DATA_DIR URL SCREENSHOT.png
Exit 0 with "ok: ..." when #summary's data-updates reached 2 (two samples arrived over server-sent events
after the page loaded); 1 with the reason otherwise. Chromium is started here and stopped by its PID.
"""

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request


class WebSocket:
    def __init__(self, url):
        assert url.startswith("ws://")
        hostport, path = url[5:].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(
            (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(1)
            if not chunk:
                raise RuntimeError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"websocket handshake refused: {head!r}")

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.s.recv(n - len(out))
            if not chunk:
                raise RuntimeError("websocket closed")
            out += chunk
        return out

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            payload = self._exact(n)
            message += payload
            if b0 & 0x80:
                return message.decode()


class Page:
    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")


def main():
    browser, profile, url, shot = sys.argv[1:5]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,1000", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"]
    proc = subprocess.Popen([browser] + flags, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        for _ in range(600):
            if os.path.exists(port_file) and open(port_file).read().count("\n") >= 1:
                break
            if proc.poll() is not None:
                sys.exit(f"FAIL: chromium exited with {proc.returncode}")
            time.sleep(0.05)
        port = int(open(port_file).read().split("\n")[0])
        req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        target = json.load(urllib.request.urlopen(req, timeout=30))
        page = Page(WebSocket(target["webSocketDebuggerUrl"]))
        page.call("Page.enable")
        page.call("Page.navigate", url=url)
        # Two live updates: samples come once a second, so this normally takes 2-3 s; the limit only bounds a
        # broken page (it is not a timing assertion).
        updates = 0
        for _ in range(240):
            updates = int(page.eval("(document.getElementById('summary') || {dataset: {}}).dataset.updates || 0"))
            if updates >= 2:
                break
            time.sleep(0.25)
        live = page.eval("document.getElementById('live').textContent")
        png = page.call("Page.captureScreenshot", format="png")["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        if updates < 2:
            sys.exit(f"FAIL: the dashboard got {updates} live updates over /events (status: {live!r})")
        print(f"ok: the dashboard received {updates} live samples over server-sent events (status {live!r})")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
