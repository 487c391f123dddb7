"""A Model shared by threads, and memory use over many calls."""
import threading

import numpy as np
from PIL import Image

from conftest import DATA, IMAGES, golden, model


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


def test_many_encodes_do_not_grow_memory():
    # one compute thread: the loop is about memory, and stays quick on a busy machine
    m = model("models/tiny-vit.safetensors", threads=1)
    rgb = np.asarray(Image.open(str(IMAGES[0])).convert("RGB"))
    pil = Image.open(str(DATA / "images/11_palette.png"))
    path = str(DATA / "images/04_camera_gray.png")
    inputs = [rgb, pil, path]
    for i in range(150):  # warm-up: buffers reach their working size
        m.encode_image(inputs[i % 3])
        m.encode_text("a photo of a cat")
    before = _rss_kib()
    for i in range(2000):
        m.encode_image(inputs[i % 3])
        if i % 4 == 0:
            m.encode_text(["a photo of a cat", "a dog"])
    grown = _rss_kib() - before
    assert grown < 4 * 1024, "RSS grew by %d KiB over 2000 encodes" % grown
