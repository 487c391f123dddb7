#!/usr/bin/env python3
"""The search page of `clipkit serve`, driven in a real browser (headless Chromium).

The test builds a small index of the example images with the demo model in a scratch folder,
starts `clipkit serve` on 127.0.0.1 on a free port, and walks through the page the way a person
would. Where the page shows search results, they are compared with what the JSON API answers for
the same query. A screenshot of every step is written to the artifacts folder.

    test_web_page.py --clipkit build/clipkit --source . --artifacts build/tests/web-artifacts

With --screenshots DIR it runs no test: it indexes the example pictures with the demo model, as the
server documentation's walkthrough does, and writes the documentation's pictures of the page to DIR
(serve-desktop.png, 1200 x 617, and serve-phone.png, 390 x 617: a search with one liked and one
disliked example). scripts/web-screenshots.sh runs it for docs/images.

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
import threading
import time
import urllib.error
import urllib.parse
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
    """`clipkit serve INDEX --port 0`, its address read from the line it prints at start; every
    line it logs afterwards (one per request) is kept in `lines`."""

    def __init__(self, clipkit, index):
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
        # The log is read as it comes, so that the server never waits on a full pipe.
        self.reader = threading.Thread(target=lambda: [self.lines.append(l) for l in self.proc.stdout], daemon=True)
        self.reader.start()

    def requests_since(self, mark):
        """The request lines logged after line number `mark`: (method, target, status)."""
        out = []
        for line in self.lines[mark:]:
            m = re.search(r" (GET|POST|PUT|PATCH|DELETE|HEAD) (\S+) (\d{3}) \d+B ", line)
            if m:
                out.append((m.group(1), m.group(2), int(m.group(3))))
        return out

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
    has_meta = "--meta" in subprocess.run([clipkit, "index", "add", "--help"], capture_output=True, text=True).stdout
    with open(os.path.join(examples, "labels.json")) as f:
        labels = json.load(f)

    def meta_for(group, folder_names):
        """--meta FILE for these folders: the garment (a string) and a made-up price (a number)."""
        if not has_meta:
            return []
        path = os.path.join(work, group + ".jsonl")
        with open(path, "w") as f:
            for folder in folder_names:
                for name in sorted(os.listdir(os.path.join(images, folder))):
                    label = labels.get(name.replace("_copy", ""), {})
                    f.write(json.dumps({"path": os.path.join(images, folder, name), "garment": label.get("garment", "other"),
                                        "price": 10 + 5 * int(name[:2])}) + "\n")
        return ["--meta", path]

    run("index", "add", index, os.path.join(images, "tops"), os.path.join(images, "bottoms"), *meta_for("clothes", ["tops", "bottoms"]))
    run("index", "add", index, os.path.join(images, "accessories"), "--tag", "accessory", *meta_for("accessories", ["accessories"]))
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
        """Item ids of the result tiles in rank order (a collapsed group counts as its first)."""
        return self.js("return Array.from(document.querySelectorAll('#grid .tile'))"
                       ".sort((a, b) => a.dataset.rank - b.dataset.rank).map(t => Number(t.dataset.id))")

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


def api_ids(server, results):
    """The tiles the page should show for API results: near-duplicates grouped under their first."""
    ids = [r["id"] for r in results]
    if len(ids) < 2:
        return ids
    status, body = server.json("api/near-duplicates", {"ids": ids, "threshold": 0.95})
    check(status == 200, f"POST /api/near-duplicates answered {status}: {body}")
    return [g[0] for g in body["groups"]]


def start_chromium(webdriver, Service, work):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1",
              f"--user-data-dir={os.path.join(work, 'chromium')}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def docs_screenshots(args, webdriver, Service):
    """The pictures of docs/server.md: the example pictures indexed with the demo model, a search
    for "striped" with the striped dress liked and the checkered hat disliked."""
    work = tempfile.mkdtemp(prefix="clipkit-web-")
    server = driver = None
    try:
        index = os.path.join(work, "patterns.idx")
        run = lambda *a: subprocess.run([args.clipkit, *a], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        run("index", "create", index, "--model", os.path.join(args.source, "models", "demo", "patterns-vit.safetensors"))
        examples = os.path.abspath(os.path.join(args.source, "examples", "patterns"))
        run("index", "add", index, examples)
        server = Server(args.clipkit, index)
        def item_id(name):
            """The id of an indexed picture: the first result of a search by itself."""
            status, body = server.json("api/search", {"like": os.path.join(examples, name), "exclude_items": False, "k": 1})
            check(status == 200 and body["results"], f"cannot find {name} in the index: {body}")
            return body["results"][0]["id"]

        query = "?" + urllib.parse.urlencode([("q", "striped"), ("like", item_id("08_striped_dress.png")),
                                              ("unlike", item_id("10_checkered_hat.png"))])
        driver = start_chromium(webdriver, Service, work)
        page = Page(driver, server, work)
        os.makedirs(args.screenshots, exist_ok=True)
        for name, width, mobile in (("serve-desktop.png", 1200, False), ("serve-phone.png", 390, True)):
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": 617, "deviceScaleFactor": 1, "mobile": mobile})
            page.open(query)
            page.wait_results("the results")
            page.wait(lambda: page.js("return Array.from(document.querySelectorAll('img')).every(i => !i.src || i.complete)"),
                      "every picture to load")
            time.sleep(0.5)
            path = os.path.join(args.screenshots, name)
            driver.save_screenshot(path)
            # 256 colours are plenty for the page and make the file a quarter of the size.
            from PIL import Image
            Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
            print(f"wrote {path}")
        return 0
    finally:
        if driver:
            driver.quit()
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clipkit", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--artifacts", help="folder for the screenshots of the steps")
    ap.add_argument("--screenshots", help="write the documentation's pictures to this folder instead of testing")
    args = ap.parse_args()
    if not args.artifacts and not args.screenshots:
        ap.error("give --artifacts (test) or --screenshots (documentation pictures)")

    if not os.access(CHROMIUM, os.X_OK):
        skip(f"{CHROMIUM} is not installed")
    if not os.access(CHROMEDRIVER, os.X_OK):
        skip(f"{CHROMEDRIVER} is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip("the Python Selenium bindings are not installed")

    if args.screenshots:
        return docs_screenshots(args, webdriver, Service)
    os.makedirs(args.artifacts, exist_ok=True)
    for f in os.listdir(args.artifacts):
        if f.endswith(".png"):
            os.remove(os.path.join(args.artifacts, f))

    work = tempfile.mkdtemp(prefix="clipkit-web-")
    server = driver = None
    try:
        index, images = build_index(args.clipkit, args.source, work)
        server = Server(args.clipkit, index)
        driver = start_chromium(webdriver, Service, work)
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

def search_api(server, query):
    status, body = server.json("api/search?" + query)
    check(status == 200, f"GET /api/search?{query} answered {status}: {body}")
    return body["results"]


def step_text_search(page, server, images):
    page.open()
    q = page.d.find_element("id", "q")
    q.send_keys("zigzag")
    page.d.find_element("css selector", "#search-form button[type=submit]").click()
    page.wait_results("the results of a text search", api_ids(server, search_api(server, "text=zigzag&k=20")))
    check("q=zigzag" in page.d.current_url, f"the query is not in the URL: {page.d.current_url}")
    page.shot("text-search")


def step_tiles(page, server, images):
    """Thumbnails, the aspect ratio kept, score and name visible without hovering."""
    page.open("?q=striped&k=50")
    page.wait_results("results for 'striped'", api_ids(server, search_api(server, "text=striped&k=50")))
    srcs = page.js("return Array.from(document.querySelectorAll('#grid .tile img')).map(i => i.getAttribute('src'))")
    check(srcs and all(re.fullmatch(r"api/items/\d+/thumb", s) for s in srcs), f"tiles do not show thumbnails: {srcs[:3]}")
    page.wait(lambda: page.js("return Array.from(document.querySelectorAll('#grid .tile img')).every(i => i.complete && i.naturalWidth > 0)"),
              "every thumbnail to load")
    for cap in page.d.find_elements("css selector", "#grid .tile figcaption"):
        score = cap.find_element("class name", "score")
        name = cap.find_element("class name", "name")
        check(score.is_displayed() and re.fullmatch(r"-?\d\.\d{3}", score.text), f"score not shown: {score.text!r}")
        check(name.is_displayed() and name.text.endswith(".png"), f"file name not shown: {name.text!r}")
    ratio = page.js("""const t = Array.from(document.querySelectorAll('#grid .tile'))
        .find(t => t.querySelector('.name').textContent === '16_strip_of_three.png');
      if (!t) return null; const r = t.querySelector('.tile-open').getBoundingClientRect(); return r.width / r.height;""")
    check(ratio is not None and abs(ratio - 3.0) < 0.1, f"the 192x64 image is not shown at 3:1 (ratio {ratio})")
    # The thumbnail route: WebP, long side at most 256, made once and then read from the cache.
    from PIL import Image
    import io
    ids = page.tile_ids()
    status, ctype, body1 = server.get(f"api/items/{ids[0]}/thumb")
    check(status == 200 and ctype == "image/webp", f"thumbnail answered {status} {ctype}")
    im = Image.open(io.BytesIO(body1))
    check(im.format == "WEBP" and max(im.size) <= 256, f"thumbnail is {im.format} {im.size}")
    _, _, body2 = server.get(f"api/items/{ids[0]}/thumb")
    check(body1 == body2, "a second request for a thumbnail gave other bytes")
    page.shot("tiles")


def step_near_duplicates(page, server, images):
    page.open("?q=zigzag+skirt")
    results = search_api(server, "text=zigzag+skirt&k=20")
    page.wait_results("results for 'zigzag skirt'", api_ids(server, results))
    names = {r["id"]: os.path.basename(r["path"]) for r in results}
    skirt = next(i for i, n in names.items() if n == "05_zigzag_skirt.png")
    copy = next(i for i, n in names.items() if n == "05_zigzag_skirt_copy.png")
    grouped = page.js("return Array.from(document.querySelectorAll('#grid .tile[data-dups]')).map(t => [Number(t.dataset.id), t.dataset.dups, t.querySelector('.dups').textContent])")
    check(any({first, int(dups)} == {skirt, copy} and label == "+1 similar" for first, dups, label in grouped),
          f"the skirt and its copy ({skirt}, {copy}) are not grouped: {grouped}")
    page.shot("near-duplicates")


def step_viewer(page, server, images):
    page.open("?q=plaid")
    results = search_api(server, "text=plaid&k=20")
    page.wait_results("results for 'plaid'", api_ids(server, results))
    page.d.find_element("css selector", '#grid .tile[data-rank="0"] .tile-open').click()
    page.wait(lambda: page.js("return document.getElementById('viewer').open"), "the viewer to open")
    first = results[0]
    title = page.d.find_element("id", "viewer-title").text
    check(title == os.path.basename(first["path"]), f"viewer title {title!r}, expected {os.path.basename(first['path'])!r}")
    meta = page.d.find_element("id", "viewer-meta").text
    check(first["path"] in meta, f"the path is not in the viewer: {meta!r}")
    check(time.strftime("%Y") in meta, f"the date the item was added is not this year's: {meta!r}")
    href = page.d.find_element("id", "viewer-original").get_attribute("href")
    check(href.endswith(f"api/items/{first['id']}/image"), f"link to the original: {href}")
    page.wait(lambda: page.js("return document.getElementById('viewer-image').src.endsWith('/image') && document.getElementById('viewer-image').complete"),
              "the original image in the viewer")
    page.shot("viewer")
    page.d.find_element("id", "viewer-next").click()
    page.wait(lambda: page.d.find_element("id", "viewer-title").text == os.path.basename(results[1]["path"]) or
              results[1]["id"] not in page.tile_ids(), "the next result in the viewer")
    from selenium.webdriver.common.keys import Keys
    page.d.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    page.wait(lambda: not page.js("return document.getElementById('viewer').open"), "the viewer to close on Escape")


def step_keyboard(page, server, images):
    from selenium.webdriver.common.keys import Keys
    page.open("?q=plaid")
    page.wait_results("results for 'plaid'", api_ids(server, search_api(server, "text=plaid&k=20")))
    page.js("document.querySelector('#grid .tile[data-rank=\"0\"] .tile-open').focus()")
    page.d.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    rank = page.js("return document.activeElement.closest('.tile') && document.activeElement.closest('.tile').dataset.rank")
    check(rank == "1", f"ArrowRight moved the focus to rank {rank}, expected 1")
    page.d.switch_to.active_element.send_keys(Keys.ENTER)
    page.wait(lambda: page.js("return document.getElementById('viewer').open"), "Enter to open the viewer")
    page.d.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.wait(lambda: not page.js("return document.getElementById('viewer').open"), "the viewer to close")
    page.shot("keyboard")


def step_clean_log(page, server, images):
    """Loading the page and searching leaves no error in the server's log (no probing requests)."""
    mark = len(server.lines)
    page.open("?q=zigzag")
    page.wait_results("results for 'zigzag'", api_ids(server, search_api(server, "text=zigzag&k=20")))
    page.wait(lambda: page.js("return Array.from(document.querySelectorAll('#grid .tile img')).every(i => i.complete)"),
              "every thumbnail to load")
    time.sleep(0.5)  # the last lines of the log
    logged = server.requests_since(mark)
    check(any(t.startswith("/api/info") for _, t, _ in logged), f"the page load is not in the log: {logged}")
    errors = [r for r in logged if r[2] >= 400]
    check(not errors, f"a page load logged errors: {errors}")


def step_paging(page, server, images):
    """"More results" asks for the next page (offset) and shows the ranking a larger k gives."""
    page.open("?q=striped&k=5")
    page.wait_results("the first page", api_ids(server, search_api(server, "text=striped&k=5")))
    more = page.d.find_element("id", "more")
    check(more.is_displayed(), "no 'More results' button after a full first page")
    both = api_ids(server, search_api(server, "text=striped&k=10"))
    mark = len(server.lines)
    more.click()
    page.wait_results("the second page", both)
    asked = [t for m, t, _ in server.requests_since(mark) if t.startswith("/api/search?")]
    check(asked and all("offset=5" in t and "k=5" in t for t in asked), f"the second page was not asked as k=5&offset=5: {asked}")
    page.shot("paging")
    # The same with a like (a recommendation query), twice.
    _, first = server.json("api/search?text=striped&k=1")
    liked = first["results"][0]["id"]
    page.open(f"?like={liked}&k=4")
    rec = lambda k: server.json("api/recommend", {"positive": [liked], "negative": [], "strategy": "average", "k": k})[1]["results"]
    page.wait_results("the first page of a like", api_ids(server, rec(4)))
    for k in (8, 12):
        page.d.find_element("id", "more").click()
        page.wait_results(f"the first {k} results of a like", api_ids(server, rec(k)))


def step_feedback(page, server, images):
    page.open("?q=zigzag")
    results = search_api(server, "text=zigzag&k=20")
    page.wait_results("results for 'zigzag'", api_ids(server, results))
    liked = page.tile_ids()[1]
    page.d.find_element("css selector", f'#grid .tile[data-id="{liked}"] .like').click()
    page.wait(lambda: f"like={liked}" in page.d.current_url, "the like in the URL")
    chips = page.d.find_elements("css selector", "#feedback-chips .chip[data-kind=like]")
    check(len(chips) == 1 and chips[0].get_attribute("data-ref") == str(liked), "no chip for the liked example")
    status, body = server.json("api/recommend", {"positive": [liked, "text:zigzag"], "negative": [], "strategy": "average", "k": 20})
    check(status == 200, f"POST /api/recommend answered {status}: {body}")
    page.wait_results("the results of a like", api_ids(server, body["results"]))
    page.shot("like")
    disliked = page.tile_ids()[2]
    page.d.find_element("css selector", f'#grid .tile[data-id="{disliked}"] .dislike').click()
    page.wait(lambda: f"unlike={disliked}" in page.d.current_url, "the dislike in the URL")
    status, body = server.json("api/recommend", {"positive": [liked, "text:zigzag"], "negative": [disliked], "strategy": "average", "k": 20})
    check(status == 200, f"POST /api/recommend answered {status}: {body}")
    page.wait_results("the results of a like and a dislike", api_ids(server, body["results"]))
    check(disliked not in page.tile_ids(), f"the disliked item {disliked} is still shown")
    page.shot("like-dislike")
    # Removing the dislike chip goes back to the like alone.
    page.d.find_element("css selector", "#feedback-chips .chip[data-kind=dislike] .chip-remove").click()
    page.wait(lambda: "unlike=" not in page.d.current_url, "the dislike to leave the URL")
    _, body = server.json("api/recommend", {"positive": [liked, "text:zigzag"], "negative": [], "strategy": "average", "k": 20})
    page.wait_results("the results of the like alone", api_ids(server, body["results"]))
    # A like given as an indexed path, as the API takes it.
    path = next(r["path"] for r in results if r["id"] == liked)
    page.open("?" + urllib.parse.urlencode({"like": path}))
    _, body = server.json("api/recommend", {"positive": [path], "negative": [], "strategy": "average", "k": 20})
    expected = body["results"]
    page.wait_results("the results of ?like=PATH", api_ids(server, expected))
    check(not page.d.find_element("id", "status").get_attribute("class"), "the status shows an error")
    page.shot("like-by-path")


def step_filters(page, server, images):
    # Every tag of the index is offered, even when no result on the page carries it.
    tops = os.path.join(images, "tops")
    page.open("?" + urllib.parse.urlencode({"q": "striped", "prefix": tops}))
    untagged = search_api(server, urllib.parse.urlencode({"text": "striped", "path_prefix": tops, "k": 20}))
    check(untagged and not any(r.get("tags") for r in untagged), "results under tops/ carry no tag")
    page.wait_results("results under tops/", api_ids(server, untagged))
    page.d.find_element("id", "filters-toggle").click()
    page.wait(lambda: page.d.find_elements("css selector", '#tag-chips [data-tag="accessory"]'),
              "the tag chip 'accessory' (from /api/fields) with no tagged result shown")
    page.open("?q=striped")
    page.wait_results("results for 'striped'", api_ids(server, search_api(server, "text=striped&k=20")))
    page.d.find_element("id", "filters-toggle").click()
    page.wait(lambda: page.d.find_elements("css selector", '#tag-chips [data-tag="accessory"]'), "the tag chip 'accessory'")
    page.d.find_element("css selector", '#tag-chips [data-tag="accessory"]').click()
    page.wait(lambda: "tag=accessory" in page.d.current_url, "the tag in the URL")
    tagged = search_api(server, "text=striped&tag=accessory&k=20")
    check(all("/accessories/" in r["path"] for r in tagged), "the API's tag filter")
    page.wait_results("results tagged 'accessory'", api_ids(server, tagged))
    page.shot("filter-tag")
    # Path prefix and minimum score, typed in the panel.
    page.open("?q=striped")
    page.wait_results("results for 'striped'", api_ids(server, search_api(server, "text=striped&k=20")))
    if not page.d.find_element("id", "filters").is_displayed():
        page.d.find_element("id", "filters-toggle").click()
    prefix = os.path.join(images, "tops")
    page.d.find_element("id", "path-prefix").send_keys(prefix)
    scores = [r["score"] for r in search_api(server, urllib.parse.urlencode({"text": "striped", "path_prefix": prefix, "k": 20}))]
    minimum = round(sorted(scores)[len(scores) // 2], 2)
    page.d.find_element("id", "min-score").send_keys(str(minimum))
    page.d.find_element("id", "filters-apply").click()
    expected = search_api(server, urllib.parse.urlencode({"text": "striped", "path_prefix": prefix, "min_score": minimum, "k": 20}))
    check(expected and all(r["path"].startswith(prefix) and r["score"] >= minimum for r in expected), "the API's filters")
    page.wait_results("results with a path prefix and a minimum score", api_ids(server, expected))
    check("prefix=" in page.d.current_url and "min=" in page.d.current_url, f"the filters are not in the URL: {page.d.current_url}")
    page.shot("filter-prefix-min")
    status, fields = server.json("api/fields")
    check(status == 200, f"GET /api/fields answered {status}: {fields}")
    check(fields.get("tags") and fields["tags"][0]["tag"] == "accessory", f"the tags of /api/fields: {fields.get('tags')}")
    # A string field chosen from its menu, then a number range typed in the URL.
    from selenium.webdriver.support.ui import Select
    page.open("?q=striped")
    page.wait_results("results for 'striped'", api_ids(server, search_api(server, "text=striped&k=20")))
    page.d.find_element("id", "filters-toggle").click()
    menu = page.wait(lambda: page.d.find_element("css selector", 'select[data-field="garment"]'), "the menu of the field 'garment'")
    Select(menu).select_by_value("dress")
    page.wait(lambda: "f.garment=dress" in page.d.current_url, "the field filter in the URL")
    expected = search_api(server, urllib.parse.urlencode({"text": "striped", "where": 'garment = "dress"', "k": 20}))
    check(expected and all("dress" in os.path.basename(r["path"]) for r in expected), f"the API's where filter: {[r['path'] for r in expected]}")
    page.wait_results("results with garment = dress", api_ids(server, expected))
    page.shot("filter-field")
    page.open("?q=striped&f.price=20..60")
    expected = search_api(server, urllib.parse.urlencode({"text": "striped", "where": "price >= 20 and price <= 60", "k": 20}))
    check(expected and all(20 <= 10 + 5 * int(os.path.basename(r["path"])[:2]) <= 60 for r in expected), "the API's range filter")
    page.wait_results("results with a price range", api_ids(server, expected))
    check(page.d.find_element("css selector", 'input[data-field="price"][data-end="min"]').get_attribute("value") == "20",
          "the range is not shown in its field")


def step_upload(page, server, images):
    page.open()
    path = os.path.join(images, "bottoms", "04_plaid_trousers.png")
    page.d.find_element("id", "file").send_keys(path)
    with open(path, "rb") as f:
        status, body = server.json("api/search/image?k=20", f.read(), "image/png")
    check(status == 200, f"POST /api/search/image answered {status}")
    page.wait_results("the results of an uploaded image", api_ids(server, body["results"]))
    check(page.js("return document.getElementById('query-image').src.startsWith('blob:')"), "no preview of the uploaded image")
    check("04_plaid_trousers.png" in page.d.find_element("id", "query-label").text, "the preview does not name the file")
    page.shot("upload")
    # Pasting an image, then dropping one, searches by it the same way.
    for kind, name in (("paste", "05_zigzag_skirt.png"), ("drop", "02_checkered_scarf.png")):
        path = next(os.path.join(d, f) for d, _, fs in os.walk(images) for f in fs if f == name)
        with open(path, "rb") as f:
            status, body = server.json("api/search/image?k=20", f.read(), "image/png")
        check(status == 200, f"POST /api/search/image answered {status}")
        _, hit = server.json("api/search", {"like": path, "exclude_items": False, "k": 1})
        page.js("""const [id, kind, name] = arguments;
          fetch(`api/items/${id}/image`).then((r) => r.blob()).then((b) => {
            const dt = new DataTransfer();
            dt.items.add(new File([b], name, { type: "image/png" }));
            window.dispatchEvent(kind === "paste" ? new ClipboardEvent("paste", { clipboardData: dt, cancelable: true })
                                                  : new DragEvent("drop", { dataTransfer: dt, cancelable: true }));
          });""", hit["results"][0]["id"], kind, name)
        page.wait_results(f"the results of a {kind}d image", api_ids(server, body["results"]))
        check(name in page.d.find_element("id", "query-label").text, f"the preview does not name the {kind}d file")


def step_odd_urls(page, server, images):
    page.open("?q=zigzag&k=37")
    page.wait_results("results for k=37", api_ids(server, search_api(server, "text=zigzag&k=37")))
    check(page.js("return document.getElementById('k').value") == "37", "k=37 is not shown in the menu")
    check(not page.d.find_element("id", "status").get_attribute("class"), f"error for k=37: {page.status()}")
    page.shot("k-37")
    page.open("?q=zigzag&templates=no-such-set")
    page.wait_results("results with an unknown template set", api_ids(server, search_api(server, "text=zigzag&k=20")))
    n = page.d.find_element("id", "note")
    check(n.is_displayed() and "no-such-set" in n.text, f"no visible note about the template set: {n.text!r}")
    check("templates=" not in page.d.current_url, f"the URL still names the unknown set: {page.d.current_url}")
    page.shot("bad-templates")
    page.open("?q=zigzag&k=abc")
    page.wait_results("results with k=abc", api_ids(server, search_api(server, "text=zigzag&k=20")))
    check(page.d.find_element("id", "note").is_displayed(), "no visible note about k=abc")


def step_accessibility(page, server, images):
    """Every control has a name, text has enough contrast, the focused tile is outlined."""
    page.open("?q=striped&like=1")
    page.wait_results("results for 'striped' with a like")
    page.d.find_element("id", "filters-toggle").click()
    unnamed = page.js("""
      const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
      const name = (e) => (e.getAttribute('aria-label') || '').trim() ||
        (e.getAttribute('aria-labelledby') ? document.getElementById(e.getAttribute('aria-labelledby')).textContent.trim() : '') ||
        (e.labels && Array.from(e.labels).map(l => l.textContent.trim()).join(' ')) ||
        (e.tagName === 'BUTTON' || e.tagName === 'A' ? e.textContent.trim() : '') || (e.getAttribute('title') || '').trim();
      return Array.from(document.querySelectorAll('input, select, button, a[href]')).filter(visible).filter(e => !name(e)).map(e => e.outerHTML.slice(0, 80));""")
    check(not unnamed, f"controls without an accessible name: {unnamed}")
    low = page.js("""
      const rgb = (c) => c.match(/[\d.]+/g).slice(0, 3).map(Number);
      const lum = (c) => { const v = rgb(c).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
        return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
      const bg = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor; if (!/rgba\(.*, 0\)$/.test(c) && c !== 'transparent') return c; } return 'rgb(255,255,255)'; };
      const out = [];
      for (const sel of ['#status', '.tile .score', '.tile .name', '.tile .like', '#footer', '#filters label', '.chip-label', 'button[type=submit]']) {
        const e = document.querySelector(sel); if (!e) continue;
        const a = lum(getComputedStyle(e).color), b = lum(bg(e));
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        if (ratio < 4.5) out.push(sel + ' ' + ratio.toFixed(2));
      }
      return out;""")
    check(not low, f"text below a 4.5:1 contrast: {low}")
    page.js("document.querySelector('#grid .tile[data-rank=\"0\"] .tile-open').focus({focusVisible: true})")
    from selenium.webdriver.common.keys import Keys
    page.d.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    outline = page.js("const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]")
    check(outline[0] != "none" and outline[1] != "0px", f"the focused tile has no outline: {outline}")
    page.shot("accessibility")


def step_phone(page, server, images):
    page.d.set_window_size(390, 844)
    try:
        page.open("?q=striped&k=50")
        page.wait_results("results on a phone", api_ids(server, search_api(server, "text=striped&k=50")))
        lefts = page.js("return [...new Set(Array.from(document.querySelectorAll('#grid .tile')).map(t => Math.round(t.getBoundingClientRect().left)))]")
        check(len(lefts) == 2, f"expected two columns at 390 px, tiles start at x = {lefts}")
        width = page.js("return document.documentElement.scrollWidth")
        check(width <= 390, f"the page is {width} px wide on a 390 px screen")
        page.shot("phone")
    finally:
        page.d.set_window_size(1280, 900)


STEPS = [
    ("text search", step_text_search),
    ("tiles", step_tiles),
    ("near-duplicates", step_near_duplicates),
    ("viewer", step_viewer),
    ("keyboard", step_keyboard),
    ("paging", step_paging),
    ("clean log", step_clean_log),
    ("feedback", step_feedback),
    ("filters", step_filters),
    ("upload", step_upload),
    ("odd urls", step_odd_urls),
    ("accessibility", step_accessibility),
    ("phone", step_phone),
]

if __name__ == "__main__":
    sys.exit(main())
