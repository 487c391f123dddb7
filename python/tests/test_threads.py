"""A Model shared by threads, and memory use over many calls."""
import threading

import numpy as np

from conftest import DATA, IMAGES, golden


def test_two_threads_encoding_at_once_equal_one_thread(vit):
    files = [str(p) for p in IMAGES]
    texts = golden("tiny-vit").meta["texts"]
    want_img = vit.encode_image(files)
    want_txt = vit.encode_text(texts)
    results = {}
    start = threading.Barrier(2)

    def work(name):
        start.wait()
        out = []
        for _ in range(5):
            out.append((vit.encode_image(files), vit.encode_text(texts)))
        results[name] = out

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        assert len(results[name]) == 5
        for img, txt in results[name]:
            np.testing.assert_array_equal(img, want_img)
            np.testing.assert_array_equal(txt, want_txt)


def _rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_many_encodes_do_not_grow_memory(vit):
    rgb = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(str(IMAGES[0])).convert("RGB"))
    path = str(DATA / "images/02_coffee.png")
    for _ in range(200):  # warm-up: buffers reach their working size
        vit.encode_image([rgb, path])
        vit.encode_text(["a photo of a cat"])
    before = _rss_kib()
    for _ in range(2000):
        vit.encode_image([rgb, path])
        vit.encode_text(["a photo of a cat"])
    grown = _rss_kib() - before
    assert grown < 4 * 1024, "RSS grew by %d KiB over 2000 encodes" % grown
