#!/usr/bin/env python3
"""The search page of `clipkit serve`, driven in a real browser (headless Chromium).

The test builds a small index of the example images with the demo model in a scratch folder,
starts `clipkit serve` on 127.0.0.1 on a free port, and walks through the page the way a person
would. Where the page shows search results, they are compared with what the JSON API answers for
the same query. A screenshot of every step is written to the artifacts folder.

    test_web_page.py --clipkit build/clipkit --source . --artifacts build/tests/web-artifacts

Exits 77 (reported by ctest as skipped, with the reason) when Chromium, its driver or the Python
Selenium bindings are missing; scripts/install-deps.sh installs them.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SKIP = 77
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def skip(reason):
    print(f"SKIPPED: {reason} (install with scripts/install-deps.sh: chromium chromium-driver python3-selenium)")
    sys.exit(SKIP)


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


class Server:
    """`clipkit serve INDEX --port 0`, its address read from the line it prints at start."""

    def __init__(self, clipkit, index):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([clipkit, "serve", index, "--host", "127.0.0.1", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        self.base = None
        self.lines = []
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+/)", line)
            if m:
                self.base = m.group(1)
                break
        if not self.base:
            self.stop()
            raise Failure("clipkit serve did not start: " + "".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()

    def json(self, path, body=None, content_type="application/json"):
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data,
                                     headers={"Content-Type": content_type} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def build_index(clipkit, source, work):
    """Example images in three folders (accessories tagged), plus a near-duplicate of one image."""
    from PIL import Image

    examples = os.path.join(source, "examples", "patterns")
    model = os.path.join(source, "models", "demo", "patterns-vit.safetensors")
    images = os.path.join(work, "images")
    folders = {"tops": ["t-shirt", "dress"], "bottoms": ["trousers", "skirt"],
               "accessories": ["sock", "scarf", "hat", "handbag"]}
    for f in folders:
        os.makedirs(os.path.join(images, f))
    for name in sorted(os.listdir(examples)):
        if not name.endswith(".png"):
            continue
        garment = name[:-4].split("_")[-1]
        folder = next(f for f, gs in folders.items() if garment in gs)
        shutil.copy(os.path.join(examples, name), os.path.join(images, folder, name))
    # A near-duplicate: the zigzag skirt with one pixel changed (other bytes, almost the same image).
    im = Image.open(os.path.join(examples, "05_zigzag_skirt.png")).convert("RGB")
    im.putpixel((0, 0), (255, 0, 255))
    im.save(os.path.join(images, "bottoms", "05_zigzag_skirt_copy.png"))
    # A wide image, so that the layout has an aspect ratio other than 1 to keep.
    wide = Image.new("RGB", (192, 64))
    for i in range(3):
        wide.paste(Image.open(os.path.join(examples, f"0{i}_" + ["striped_t-shirt", "polka_dot_sock", "checkered_scarf"][i] + ".png")).convert("RGB"), (64 * i, 0))
    wide.save(os.path.join(images, "tops", "16_strip_of_three.png"))

    index = os.path.join(work, "demo.idx")
    run = lambda *a: subprocess.run([clipkit, *a], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run("index", "create", index, "--model", model)
    run("index", "add", index, os.path.join(images, "tops"), os.path.join(images, "bottoms"))
    run("index", "add", index, os.path.join(images, "accessories"), "--tag", "accessory")
    return index, images


class Page:
    def __init__(self, driver, server, artifacts):
        self.d = driver
        self.server = server
        self.artifacts = artifacts
        self.step = 0

    def shot(self, name):
        self.step += 1
        path = os.path.join(self.artifacts, f"{self.step:02d}-{name}.png")
        self.d.save_screenshot(path)
        return path

    def open(self, query=""):
        self.d.get(self.server.base + query)

    def wait(self, cond, what, timeout=30):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                v = cond()
                if v:
                    return v
            except Exception as e:  # the element is being replaced: try again
                last = e
            time.sleep(0.1)
        self.shot("FAILED-" + re.sub(r"\W+", "-", what)[:40])
        raise Failure(f"timed out waiting for {what}" + (f" ({last})" if last else "") +
                      f"; status line: {self.status()!r}")

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def status(self):
        try:
            return self.js("return document.getElementById('status').textContent")
        except Exception:
            return None

    def tile_ids(self):
        """Item ids of the result tiles in page order (a collapsed group counts as its first)."""
        return self.js("return Array.from(document.querySelectorAll('#grid .tile')).map(t => Number(t.dataset.id))")

    def wait_results(self, what, expected=None):
        """Waits until the page shows results (the ids `expected`, in order, when given)."""
        def ready():
            if self.js("return document.body.dataset.busy") == "1":
                return None
            ids = self.tile_ids()
            if expected is None:
                return ids or None
            return ids if ids == expected else None
        try:
            return self.wait(ready, what)
        except Failure as e:
            raise Failure(f"{e}; page shows {self.tile_ids()}, expected {expected}")


def api_ids(results):
    """Result ids as the page shows them: near-duplicates (collapsed) left out after their first."""
    return [r["id"] for r in results]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clipkit", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--artifacts", required=True)
    args = ap.parse_args()

    if not os.access(CHROMIUM, os.X_OK):
        skip(f"{CHROMIUM} is not installed")
    if not os.access(CHROMEDRIVER, os.X_OK):
        skip(f"{CHROMEDRIVER} is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip("the Python Selenium bindings are not installed")

    os.makedirs(args.artifacts, exist_ok=True)
    for f in os.listdir(args.artifacts):
        if f.endswith(".png"):
            os.remove(os.path.join(args.artifacts, f))

    work = tempfile.mkdtemp(prefix="clipkit-web-")
    server = driver = None
    try:
        index, images = build_index(args.clipkit, args.source, work)
        server = Server(args.clipkit, index)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1",
                  f"--user-data-dir={os.path.join(work, 'chromium')}"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        driver.set_page_load_timeout(60)
        page = Page(driver, server, args.artifacts)
        failures = []
        for name, fn in STEPS:
            print(f"-- {name}", flush=True)
            try:
                fn(page, server, images)
                print(f"   ok", flush=True)
            except Failure as e:
                failures.append(f"{name}: {e}")
                print(f"   FAILED: {e}", flush=True)
                page.shot("failed-" + name.replace(" ", "-"))
        print(f"screenshots: {args.artifacts}")
        if failures:
            print(f"{len(failures)} of {len(STEPS)} steps failed:\n  " + "\n  ".join(failures))
            return 1
        print(f"all {len(STEPS)} steps passed")
        return 0
    finally:
        if driver:
            driver.quit()
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


# ---- the steps --------------------------------------------------------------------------------

def step_text_search(page, server, images):
    page.open()
    q = page.d.find_element("id", "q")
    q.send_keys("zigzag")
    page.d.find_element("css selector", "#search-form button[type=submit]").click()
    status, body = server.json("api/search?text=zigzag&k=20")
    check(status == 200, f"GET /api/search answered {status}")
    page.wait_results("the results of a text search", api_ids(body["results"]))
    check("q=zigzag" in page.d.current_url, f"the query is not in the URL: {page.d.current_url}")
    page.shot("text-search")


def step_upload(page, server, images):
    page.open()
    path = os.path.join(images, "bottoms", "04_plaid_trousers.png")
    page.d.find_element("id", "file").send_keys(path)
    with open(path, "rb") as f:
        status, body = server.json("api/search/image?k=20", f.read(), "image/png")
    check(status == 200, f"POST /api/search/image answered {status}")
    page.wait_results("the results of an uploaded image", api_ids(body["results"]))
    page.shot("upload")


STEPS = [
    ("text search", step_text_search),
    ("upload", step_upload),
]

if __name__ == "__main__":
    sys.exit(main())
