"""rsvl.io.html_report: one self-contained page (embedded pictures, escaped text, metric tables)."""

from __future__ import annotations

import base64

import numpy as np

from rsvl.io.html_report import HtmlReport
from rsvl.io.overlay import save_png
from rsvl.metrics.report import EvalReport


def test_page_embeds_pictures_escapes_text_and_lists_the_protocol(tmp_path):
    picture = tmp_path / "a.png"
    save_png(picture, np.full((4, 6, 3), 200, np.uint8))
    page = HtmlReport("demo <1>")
    page.heading("trees & more")
    page.paragraph("<script>alert(1)</script>")
    page.image(picture, "four by six")
    page.table([{"name": "tree", "score": 0.123456}], caption="dets")
    page.table([], caption="none")
    page.evaluation(EvalReport("detection", "coco", {"AP": 0.5}, {"iou_thresholds": "0.50:0.95"}))
    text = page.write(tmp_path / "r.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "demo &lt;1&gt;" in text
    embedded = text.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(embedded) == picture.read_bytes()
    assert "<td>0.1235</td>" in text and "none: no rows" in text
    assert "iou_thresholds" in text and "0.50:0.95" in text and "<td>AP</td>" in text
    assert "http" not in text  # nothing to fetch: opens offline
