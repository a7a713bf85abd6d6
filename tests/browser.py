"""
Open a local HTML page in headless Chromium and report what a reader would meet: console errors and exceptions,
resources that failed to load, every <img> that did not decode, every <audio> and its duration, every inline <svg>
and its size, the page's width against the window's (1280 px) and each listening grid's box, the summary's items,
and a screenshot of the first screen. Chromium is driven through its DevTools protocol over a
websocket on 127.0.0.1 (a minimal client below: the standard library has none); nothing leaves the machine.

Debian's package is `chromium` (the Makefile's system-deps installs it).
"""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1280,900"]

# run in the page once it has loaded: waits up to 20 s for every audio element's metadata, then describes them
PAGE_CHECK = r"""
(async () => {
  const audios = [...document.querySelectorAll('audio')];
  await Promise.all(audios.map(a => a.readyState >= 1 || a.error ? null : new Promise(done => {
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', done, {once: true});
    setTimeout(done, 20000);
    a.load();
  })));
  return JSON.stringify({
    images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
    audio: audios.map(a => ({src: a.getAttribute('src'), duration: a.duration, error: a.error && a.error.code})),
    svgs: [...document.querySelectorAll('svg')].filter(s => !s.parentElement.closest('svg')).map(s => {
      const r = s.getBoundingClientRect(); return {width: r.width, height: r.height}; }),
    window_width: window.innerWidth,
    page_width: document.documentElement.scrollWidth,
    grids: [...document.querySelectorAll('.grid-box')].map(b => {
      const r = b.getBoundingClientRect();
      return {left: r.left, right: r.right, scroll_width: b.scrollWidth, client_width: b.clientWidth,
              overflow_x: getComputedStyle(b).overflowX}; }),
    summary: [...document.querySelectorAll('.summary > ul > li')].map(li => ({
      warning: li.classList.contains('warning'), details: !!li.querySelector('details'),
      open: !!li.querySelector('details[open]')})),
  });
})()
"""


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class WebSocket:
    """A websocket client of the least the DevTools protocol needs: text frames, masked, unfragmented sends."""

    def __init__(self, url, timeout=60):
        assert url.startswith("ws://")
        host_port, _, path = url[5:].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the DevTools websocket closed during the handshake")
            response += chunk
        if b" 101 " not in response.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"no websocket upgrade: {response[:200]!r}")
        self.buffer = response.split(b"\r\n\r\n", 1)[1]

    def send(self, text):
        data = text.encode()
        header = bytes([0x81])
        n = len(data)
        header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 \
            else bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the DevTools websocket closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if b0 & 0x0F in (0x9, 0xA):  # ping / pong: not a message
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()


class DevTools:
    """Commands to one page target; events that arrive meanwhile are kept in .events."""

    def __init__(self, ws_url):
        self.ws, self.next_id, self.events = WebSocket(ws_url), 0, []

    def call(self, method, timeout=60, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.receive())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)
        raise TimeoutError(method)

    def wait_for(self, method, timeout=60):
        deadline = time.time() + timeout
        if any(e.get("method") == method for e in self.events):
            return
        while time.time() < deadline:
            msg = json.loads(self.ws.receive())
            self.events.append(msg)
            if msg.get("method") == method:
                return
        raise TimeoutError(method)


def check_page(html_path, screenshot_path, profile_dir, timeout=120):
    """Load html_path (a file) in headless Chromium; returns {console_errors, images, audio, svgs} (see
    PAGE_CHECK) and writes a PNG screenshot of the first screen to screenshot_path."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium, or make system-deps)")
    os.makedirs(profile_dir, exist_ok=True)
    proc = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile_dir, "DevToolsActivePort")
        deadline = time.time() + timeout
        while not (os.path.isfile(port_file) and open(port_file).read().count("\n") >= 1):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"chromium did not start (exit status {proc.poll()})")
            time.sleep(0.2)
        port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            dt.call(f"{domain}.enable")
        dt.call("Page.navigate", url="file://" + os.path.abspath(html_path))
        dt.wait_for("Page.loadEventFired", timeout)
        result = dt.call("Runtime.evaluate", timeout, expression=PAGE_CHECK, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"the page check failed: {result['exceptionDetails']}")
        found = json.loads(result["result"]["value"])
        shot = dt.call("Page.captureScreenshot", timeout, format="png")
        with open(screenshot_path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        errors = []
        for e in dt.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                errors.append(p["exceptionDetails"].get("text", "exception"))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                errors.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
        return {"console_errors": errors, **found}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
