"""Box <-> text codecs: round trips within each codec's quantisation bound, known answers,
malformed text, label delimiters and empty input (see ``rsvl.geometry.codecs``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rsvl.errors import CodecError, GeometryError, InputError
from rsvl.geometry.boxes import best_begin_poly, obb_corners, obb_to_poly, poly_area
from rsvl.geometry.codecs import (
    CODECS,
    BoxCodec,
    DotaCodec,
    Florence2Codec,
    GeoChatCodec,
    Qwen25JsonCodec,
    QwenVLCodec,
    TextObject,
    VRSBenchCodec,
    florence_dequantize,
    florence_loc_tokens,
    florence_quantize,
    get_codec,
    objects_from_arrays,
    objects_to_arrays,
)

EPS = 1e-9  # float64 round-off allowance, relative to the image size

# Per-test settings (not a global profile, which would leak into other test modules).
fast = settings(max_examples=60, deadline=None)

# ----------------------------------------------------------------------------- strategies

image_sizes = st.tuples(st.integers(16, 4096), st.integers(16, 4096))
labels = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9 _-]{0,14}[A-Za-z0-9])?", fullmatch=True)
labels_or_empty = st.one_of(st.just(""), labels)
dota_labels = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)


@st.composite
def hbb_scenes(draw, label_strategy=labels, max_objects=5):
    """An image size and up to ``max_objects`` labelled xyxy boxes inside it."""
    w, h = draw(image_sizes)
    objects = []
    for _ in range(draw(st.integers(0, max_objects))):
        x1, x2 = sorted(draw(st.floats(0, w)) for _ in range(2))
        y1, y2 = sorted(draw(st.floats(0, h)) for _ in range(2))
        objects.append(TextObject(draw(label_strategy), np.array([x1, y1, x2, y2])))
    return (w, h), objects


@st.composite
def obb_scenes(draw, label_strategy=labels, max_objects=4):
    """An image size and up to ``max_objects`` le90 boxes whose corners lie inside it."""
    w_img, h_img = draw(image_sizes)
    m = min(w_img, h_img)
    objects = []
    for _ in range(draw(st.integers(0, max_objects))):
        w = draw(st.floats(1, m / 2))
        h = draw(st.floats(0.5, w))
        a = draw(st.floats(-math.pi / 2, math.pi / 2, exclude_max=True))
        r = math.hypot(w, h) / 2
        cx, cy = draw(st.floats(r, w_img - r)), draw(st.floats(r, h_img - r))
        objects.append(TextObject(draw(label_strategy), np.array([cx, cy, w, h, a])))
    return (w_img, h_img), objects


def boxes_of(objects, width):
    return objects_to_arrays(objects, width)[1]


# ----------------------------------------------------------------------------- registry and API


def test_registry_names_and_protocol():
    assert set(CODECS) == {
        "florence2_hbb",
        "florence2_obb",
        "qwen25vl_json",
        "qwenvl",
        "qwen2vl",
        "geochat",
        "vrsbench",
        "dota",
    }
    for name, codec in CODECS.items():
        assert codec.name == name
        assert isinstance(codec, BoxCodec)
        assert codec.box_kind in ("hbb", "poly", "le90")
        assert get_codec(name) is codec
    with pytest.raises(InputError, match="unknown box codec 'nope'; known: dota"):
        get_codec("nope")


def test_florence_loc_tokens_and_quantizer():
    tokens = florence_loc_tokens()
    assert len(tokens) == len(set(tokens)) == 1000
    assert tokens[0] == "<loc_0>" and tokens[999] == "<loc_999>"
    # floor(x / (W / 1000)) clipped to 999, bin centre on the way back (transformers' Florence-2).
    assert florence_quantize([0.0, 0.4999, 0.5, 499.9, 500.0], 500).tolist() == [0, 0, 1, 999, 999]
    assert florence_dequantize([0, 999], 500).tolist() == [0.25, 499.75]


def test_objects_arrays_helpers_accept_torch_and_keep_shape_when_empty():
    objs = objects_from_arrays(["a", "b"], torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]]), [False, True])
    labels_, boxes, difficult = objects_to_arrays(objs, 4)
    assert labels_ == ["a", "b"] and boxes.dtype == np.float64 and difficult.tolist() == [False, True]
    np.testing.assert_array_equal(boxes, [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert objects_to_arrays([], 5)[1].shape == (0, 5)
    assert objects_from_arrays([], np.zeros((0, 4))) == []
    with pytest.raises(GeometryError, match="1 labels, 2 boxes"):
        objects_from_arrays(["a"], np.zeros((2, 4)))


def test_text_object_converts_box_and_tuples_are_accepted():
    obj = TextObject("plane", [1, 2, 3, 4])
    assert isinstance(obj.box, np.ndarray) and obj.box.dtype == np.float64
    codec = CODECS["vrsbench"]
    assert codec.encode([("plane", torch.tensor([0.0, 0.0, 50.0, 50.0]))], (100, 100)) == (
        "<p>plane</p> {<0><0><50><50>}"
    )


# ----------------------------------------------------------------------------- round trips (HBB)


@fast
@given(hbb_scenes())
def test_florence_hbb_round_trip_within_half_bin(scene):
    """|err| <= 0.5 * W / 1000 on x and 0.5 * H / 1000 on y."""
    (w, h), objects = scene
    codec = CODECS["florence2_hbb"]
    decoded = codec.decode(codec.encode(objects, (w, h)), (w, h))
    assert [o.label for o in decoded] == [o.label for o in objects]
    bound = np.array([w, h, w, h]) * (0.5 / 1000 + EPS)
    assert np.all(np.abs(boxes_of(decoded, 4) - boxes_of(objects, 4)) <= bound)


@fast
@given(hbb_scenes(), st.booleans())
def test_florence_native_concatenation_round_trips(scene, native):
    (w, h), objects = scene
    codec = Florence2Codec(sep="" if native else "<sep>")
    text = codec.encode(objects, (w, h))
    assert ("<sep>" in text) == (not native and len(objects) > 1)
    decoded = codec.decode(text, (w, h))
    assert [o.label for o in decoded] == [o.label for o in objects]


@fast
@given(hbb_scenes(label_strategy=st.text(max_size=12).map(str.strip)), st.booleans())
def test_qwen25_json_round_trip_within_half_pixel(scene, fenced):
    """Integer pixels: |err| <= 0.5 px; any label survives JSON escaping."""
    (w, h), objects = scene
    codec = Qwen25JsonCodec(fenced=fenced)
    text = codec.encode(objects, (w, h))
    decoded = codec.decode(f"Here you go:\n{text}\nDone." if fenced else text)
    assert [o.label for o in decoded] == [o.label for o in objects]
    assert np.all(np.abs(boxes_of(decoded, 4) - boxes_of(objects, 4)) <= 0.5 + EPS * max(w, h))


@pytest.mark.parametrize("name", ["qwenvl", "qwen2vl"])
@fast
@given(scene=hbb_scenes(label_strategy=labels_or_empty))
def test_qwen_vl_round_trip_within_half_step(name, scene):
    """0-1000 grid: |err| <= 0.5 * W / 1000 on x and 0.5 * H / 1000 on y."""
    (w, h), objects = scene
    codec = CODECS[name]
    decoded = codec.decode(codec.encode(objects, (w, h)), (w, h))
    assert [o.label for o in decoded] == [o.label for o in objects]
    bound = np.array([w, h, w, h]) * (0.5 / 1000 + EPS)
    assert np.all(np.abs(boxes_of(decoded, 4) - boxes_of(objects, 4)) <= bound)


@fast
@given(hbb_scenes(label_strategy=labels_or_empty))
def test_vrsbench_round_trip_within_half_percent(scene):
    """0-100 grid: |err| <= 0.5 * W / 100 on x and 0.5 * H / 100 on y."""
    (w, h), objects = scene
    codec = CODECS["vrsbench"]
    decoded = codec.decode(codec.encode(objects, (w, h)), (w, h))
    assert [o.label for o in decoded] == [o.label for o in objects]
    bound = np.array([w, h, w, h]) * (0.5 / 100 + EPS)
    assert np.all(np.abs(boxes_of(decoded, 4) - boxes_of(objects, 4)) <= bound)


finite = st.floats(allow_nan=False, allow_infinity=False)


@fast
@given(st.lists(st.tuples(dota_labels, st.lists(finite, min_size=8, max_size=8), st.booleans()), max_size=5))
def test_dota_round_trip_is_exact(rows):
    objects = [TextObject(lab, np.array(poly), diff) for lab, poly, diff in rows]
    codec = CODECS["dota"]
    decoded = codec.decode(codec.encode(objects))
    assert [(o.label, o.difficult) for o in decoded] == [(o.label, o.difficult) for o in objects]
    np.testing.assert_array_equal(boxes_of(decoded, 8), boxes_of(objects, 8))


# ----------------------------------------------------------------------------- round trips (OBB)


@fast
@given(obb_scenes())
def test_florence_obb_round_trip_polygons_and_areas(scene):
    """Each vertex coordinate within 0.5 * size / 1000; area within d * perimeter + 2 d^2,
    d = the largest vertex displacement, hypot(0.5 W / 1000, 0.5 H / 1000)."""
    (w, h), objects = scene
    codec = CODECS["florence2_obb"]
    decoded = codec.decode(codec.encode(objects, (w, h)), (w, h))
    assert [o.label for o in decoded] == [o.label for o in objects]
    if not objects:
        return
    polys = np.asarray(best_begin_poly(obb_to_poly(boxes_of(objects, 5))))  # what encode writes
    got = boxes_of(decoded, 8)
    assert np.all(np.abs(got - polys) <= np.tile([w, h], 4) * (0.5 / 1000 + EPS))
    d = math.hypot(w, h) * 0.5 / 1000
    perimeter = 2 * (boxes_of(objects, 5)[:, 2] + boxes_of(objects, 5)[:, 3])
    assert np.all(np.abs(poly_area(got) - poly_area(polys)) <= d * perimeter + 2 * d * d + 1e-6)


def test_florence_obb_writes_canonical_clockwise_polygon():
    codec = CODECS["florence2_obb"]
    clockwise = [100, 100, 300, 100, 300, 200, 100, 200]
    counter_clockwise = [100, 100, 100, 200, 300, 200, 300, 100]
    rotated_start = [300, 200, 100, 200, 100, 100, 300, 100]
    texts = {codec.encode([("ship", p)], (1000, 1000)) for p in (clockwise, counter_clockwise, rotated_start)}
    assert texts == {"ship<loc_100><loc_100><loc_300><loc_100><loc_300><loc_200><loc_100><loc_200>"}
    # le90 and xyxy inputs give the same polygon
    assert codec.encode([("ship", [200, 150, 200, 100, 0.0])], (1000, 1000)) in texts
    assert codec.encode([("ship", [100, 100, 300, 200])], (1000, 1000)) in texts


def geochat_corner_bound(w_img, h_img, w, h):
    """hypot(sx, sy) + (pi / 360) * hypot(w, h) / 2 (see GeoChatCodec)."""
    sx, sy = w_img / 100, h_img / 100
    return math.hypot(sx, sy) + math.pi / 360 * math.hypot(w, h) / 2


@fast
@given(obb_scenes(label_strategy=labels_or_empty))
def test_geochat_round_trip_corners_and_areas(scene):
    (w_img, h_img), objects = scene
    codec = CODECS["geochat"]
    decoded = codec.decode(codec.encode(objects, (w_img, h_img)), (w_img, h_img))
    assert [o.label for o in decoded] == [o.label for o in objects]
    sx, sy = w_img / 100, h_img / 100
    for obj, dec in zip(objects, decoded, strict=True):
        _, _, w, h, a = dec.box
        assert w >= h and -math.pi / 2 <= a < math.pi / 2  # le90
        true = np.asarray(obb_corners(obj.box))
        got = np.asarray(obb_corners(dec.box))
        dist = np.linalg.norm(true[:, None, :] - got[None, :, :], axis=-1).min(axis=1)
        bound = geochat_corner_bound(w_img, h_img, obj.box[2], obj.box[3])
        assert np.all(dist <= bound * (1 + 1e-9) + 1e-9)
        area_bound = max(obj.box[2], obj.box[3]) * (sx + sy) + sx * sy
        assert abs(w * h - obj.box[2] * obj.box[3]) <= area_bound * (1 + 1e-9)


def geochat_demo_polygon(x1, y1, x2, y2, a):
    """Reference: GeoChat's ``bbox_and_angle_to_polygon`` (geochat_demo.py), re-derived."""
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, abs(x2 - x1), abs(y2 - y1)
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    local = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return np.array([(c * dx - s * dy + cx, s * dx + c * dy + cy) for dx, dy in local])


@pytest.mark.parametrize(
    "text",
    ["{<40><35><60><45>|<30>}", "{<45><30><55><50>|<90>}", "{<10><20><30><70>|<57>}", "{<40><89><56><100>|<1>}"],
)
def test_geochat_decoding_matches_the_demo_geometry(text):
    codec = CODECS["geochat"]
    (obj,) = codec.decode(text, (1000, 1000))
    values = [int(v) * 10 for v in text.strip("{}").replace("|", "").strip("<>").split("><")]
    expected = geochat_demo_polygon(*values[:4], values[4] / 10)
    got = np.asarray(obb_corners(obj.box))
    dist = np.linalg.norm(expected[:, None, :] - got[None, :, :], axis=-1).min(axis=1)
    assert np.all(dist < 1e-9)


# ----------------------------------------------------------------------------- known answers


def test_florence_hbb_known_answer():
    codec = CODECS["florence2_hbb"]
    objs = [("plane", [10.2, 21.0, 250.0, 399.9]), ("small car 2", [0, 0, 500, 400])]
    text = codec.encode(objs, (500, 400))
    # 10.2 / 0.5 = 20.4 -> 20; 21 / 0.4 = 52.5 -> 52; 250 / 0.5 = 500; 399.9 / 0.4 = 999.75 -> 999
    assert text == "plane<loc_20><loc_52><loc_500><loc_999><sep>small car 2<loc_0><loc_0><loc_999><loc_999>"
    decoded = codec.decode(text, (500, 400))
    assert [o.label for o in decoded] == ["plane", "small car 2"]
    np.testing.assert_allclose(decoded[0].box, [10.25, 21.0, 250.25, 399.8])
    np.testing.assert_allclose(decoded[1].box, [0.25, 0.2, 499.75, 399.8])


def test_florence_decodes_native_output_with_specials_and_multi_box_labels():
    codec = CODECS["florence2_hbb"]
    text = "</s><s>car" + "".join(f"<loc_{k}>" for k in range(1, 9)) + " bus <loc_0><loc_0><loc_9><loc_9></s><pad>"
    decoded = codec.decode(text, (1000, 1000))
    assert [o.label for o in decoded] == ["car", "car", "bus"]
    np.testing.assert_allclose(decoded[1].box, [5.5, 6.5, 7.5, 8.5])
    np.testing.assert_allclose(decoded[2].box, [0.5, 0.5, 9.5, 9.5])


def test_florence_obb_known_answer():
    codec = CODECS["florence2_obb"]
    text = "storage tank<loc_100><loc_100><loc_300><loc_100><loc_300><loc_200><loc_100><loc_200>"
    (obj,) = codec.decode(text, (1000, 500))
    assert obj.label == "storage tank"
    np.testing.assert_allclose(obj.box, [100.5, 50.25, 300.5, 50.25, 300.5, 100.25, 100.5, 100.25])


def test_qwen25_json_known_answer():
    codec = CODECS["qwen25vl_json"]
    text = codec.encode([("plane", [10.2, 20.5, 249.5, 399.9]), ("", [0, 0, 1, 1])])
    assert text == '[{"bbox_2d": [10, 21, 250, 400], "label": "plane"}, {"bbox_2d": [0, 0, 1, 1], "label": ""}]'
    assert Qwen25JsonCodec(fenced=True).encode([("a", [1, 2, 3, 4])]) == (
        '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]\n```'
    )
    reply = 'Sure.\n```json\n[\n\t{"bbox_2d": [1, 2.5, 3, 4], "label": " plane ", "score": 1}\n]\n```\nAnything else?'
    (obj,) = codec.decode(reply)
    assert obj.label == "plane"
    np.testing.assert_array_equal(obj.box, [1, 2.5, 3, 4])
    (single,) = codec.decode('{"bbox_2d": [1, 2, 3, 4], "label": "ship"}')
    assert single.label == "ship"
    # prose with brackets before the fence, and fence characters inside a label
    fenced = Qwen25JsonCodec(fenced=True).encode([("a ```b``` [c]", [1, 2, 3, 4])])
    (tricky,) = codec.decode("The boxes [as asked]:\n" + fenced + "\nDone {ok}.")
    assert tricky.label == "a ```b``` [c]"


def test_qwen_vl_known_answers_both_spellings():
    objs = [("plane", [10.2, 21.0, 250.0, 399.9]), ("", [0, 0, 1, 1])]
    # 10.2 * 1000 / 500 = 20.4 -> 20; 21 * 1000 / 400 = 52.5 -> 53 (halves up); 399.9 -> 999.75 -> 1000
    assert CODECS["qwenvl"].encode(objs, (500, 400)) == (
        "<ref>plane</ref><box>(20,53),(500,1000)</box><ref></ref><box>(0,0),(2,3)</box>"
    )
    assert QwenVLCodec(spelling="qwen2-vl").encode(objs[:1], (500, 400)) == (
        "<|object_ref_start|>plane<|object_ref_end|><|box_start|>(20,53),(500,1000)<|box_end|>"
    )
    mixed = (
        "The <ref> plane </ref> is at <box>(20, 53),(500,1000)</box> and <box>(0,0),(10,10)</box>; "
        "<|object_ref_start|>ship<|object_ref_end|><|box_start|>(0,0),(1000,1000)<|box_end|>"
    )
    decoded = CODECS["qwen2vl"].decode(mixed, (500, 400))
    assert [o.label for o in decoded] == ["plane", "plane", "ship"]
    np.testing.assert_allclose(decoded[0].box, [10, 21.2, 250, 400])
    np.testing.assert_allclose(decoded[2].box, [0, 0, 500, 400])
    assert CODECS["qwenvl"].decode("<box>(1,2),(3,4)</box>", (1000, 1000))[0].label == ""


def test_geochat_known_answers():
    codec = CODECS["geochat"]
    size = (1000, 1000)
    cases = [
        # (le90 box (angle in degrees), text)
        ((500, 400, 200, 100, 30), "{<40><35><60><45>|<30>}"),
        ((500, 400, 200, 100, -60), "{<45><30><55><50>|<30>}"),  # -60 + 90 = 30, sides swapped
        ((500, 400, 200, 100, 0), "{<45><30><55><50>|<90>}"),  # axis-aligned: theta = 90
        ((500, 400, 200, 100, -90), "{<40><35><60><45>|<90>}"),
    ]
    for (cx, cy, w, h, deg), text in cases:
        box = [cx, cy, w, h, math.radians(deg)]
        assert codec.encode([("", box)], size) == text
        (obj,) = codec.decode(text, size)
        np.testing.assert_allclose(obj.box, box, atol=1e-12)
    objs = [("plane", [500, 400, 200, 100, 0.0]), ("plane", [100, 100, 20, 10, 0.0]), ("car", [5, 5, 2, 1, 0.0])]
    assert codec.encode(objs, size) == (
        "<p>plane</p> {<45><30><55><50>|<90>}<delim>{<10><9><11><11>|<90>}\n<p>car</p> {<0><0><1><1>|<90>}"
    )


def test_geochat_decodes_real_model_answers():
    codec = CODECS["geochat"]
    answer = (
        "<p>1 white plane</p> {<49><48><57><56>|<90>}<delim>{<35><54><43><62>|<90>}  at the center\n"
        "<p>1 silver large-vehicle</p> {<70><93><74><97>|<90>} at the bottom {<1><2><3><4>|<0>}"
    )
    decoded = codec.decode(answer, (504, 504))
    assert [o.label for o in decoded] == ["1 white plane", "1 white plane", "1 silver large-vehicle", ""]
    (identify,) = codec.decode("[identify] what is this {<8><26><22><37>}", (100, 100))
    np.testing.assert_allclose(identify.box, [15, 31.5, 14, 11, 0])


def test_vrsbench_known_answer():
    codec = CODECS["vrsbench"]
    # 10.2 * 100 / 500 = 2.04 -> 2; 21 * 100 / 400 = 5.25 -> 5; 250 -> 50; 399.9 -> 99.975 -> 100
    assert codec.encode([("", [10.2, 21.0, 250.0, 399.9])], (500, 400)) == "{<2><5><50><100>}"
    (obj,) = codec.decode("The answer is {<2><5><50><100>}.", (500, 400))
    assert obj.label == ""
    np.testing.assert_allclose(obj.box, [10, 20, 250, 400])


def test_dota_known_answer():
    codec = CODECS["dota"]
    objs = [
        TextObject("plane", np.array([10, 20.5, 30, 20.5, 30, 40, 0.1 + 0.2, 40]), difficult=True),
        TextObject("small-vehicle", np.array([1e20, 1e-17, -3, 4, 5, 6, 7, 8])),
    ]
    text = codec.encode(objs)
    assert text == ("10 20.5 30 20.5 30 40 0.30000000000000004 40 plane 1\n1e+20 1e-17 -3 4 5 6 7 8 small-vehicle 0")
    decoded = codec.decode("imagesource:GoogleEarth\ngsd:0.146\n\n" + text + "\n1 2 3 4 5 6 7 8 ship\n")
    assert [(o.label, o.difficult) for o in decoded] == [
        ("plane", True),
        ("small-vehicle", False),
        ("ship", False),
    ]
    assert decoded[0].box[6] == 0.1 + 0.2
    # le90 input is written as the canonical polygon
    assert codec.encode([("ship", [2, 1, 4, 2, 0.0])]) == "0 0 4 0 4 2 0 2 ship 0"


# ----------------------------------------------------------------------------- empty input


@pytest.mark.parametrize("name", sorted(CODECS))
def test_empty_object_list_and_blank_text(name):
    codec = CODECS[name]
    size = (100, 100)
    text = codec.encode([], size)
    assert text == ("[]" if name == "qwen25vl_json" else "")
    assert codec.decode(text, size) == []
    assert codec.decode("", size) == []
    assert codec.decode("  \n\t", size) == []


def test_empty_conventions_per_grammar():
    size = (100, 100)
    assert CODECS["florence2_hbb"].decode("</s><s><pad>", size) == []
    assert CODECS["florence2_hbb"].decode("<sep><sep>", size) == []
    assert CODECS["qwen25vl_json"].decode("```json\n[]\n```", size) == []
    for name in ("qwenvl", "geochat", "vrsbench"):  # prose grammars: prose without boxes is no boxes
        assert CODECS[name].decode("There are no planes in this image.", size) == []
    with pytest.raises(CodecError, match="found no"):
        CODECS["qwen25vl_json"].decode("There are no planes.", size)
    with pytest.raises(CodecError, match="expected a multiple of 4 <loc_k> tokens after label 'no planes'"):
        CODECS["florence2_hbb"].decode("no planes", size)


# ----------------------------------------------------------------------------- malformed text


MALFORMED = [
    ("florence2_hbb", "plane<loc_1><loc_2><loc_3><loc_4", r"truncated token at offset 26: '<loc_4'"),
    ("florence2_hbb", "<loc_1><loc_2><loc_3><loc_4>", r"missing label before <loc_1> at offset 0"),
    ("florence2_hbb", "a<loc_1><loc_2><loc_3><loc_4><sep><loc_1><loc_2><loc_3><loc_4>", r"missing label"),
    ("florence2_hbb", "plane<loc_1><loc_2><loc_3>", r"multiple of 4 <loc_k> tokens after label 'plane' .* got 3"),
    ("florence2_hbb", "plane<sep>car<loc_1><loc_2><loc_3><loc_4>", r"after label 'plane' at offset 0, got 0"),
    ("florence2_obb", "ship" + "<loc_1>" * 4, r"multiple of 8 <loc_k> tokens after label 'ship'.* got 4"),
    ("florence2_hbb", "plane<loc_1><loc_x><loc_3><loc_4>", r"non-numeric loc token '<loc_x>' at offset 12"),
    ("florence2_hbb", "plane<loc_1><loc_-2><loc_3><loc_4>", r"non-numeric loc token '<loc_-2>'"),
    ("florence2_hbb", "plane<loc_1><loc_2><loc_3><loc_1000>", r"loc index 1000 out of range \[0, 999\]"),
    ("florence2_hbb", "plane<loc_1><loc_2><loc_3><foo>", r"unknown token '<foo>' at offset 26"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3], "label": "a"}]', r"item 0: 'bbox_2d' must be a list of 4 numbers"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3, "4"], "label": "a"}]', r"list of 4 numbers, got \[1, 2, 3, '4'\]"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3, true], "label": "a"}]', r"list of 4 numbers"),
    ("qwen25vl_json", '[{"bbox_2d": [NaN, 2, 3, 4], "label": "a"}]', r"non-finite number NaN"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3, -Infinity], "label": "a"}]', r"non-finite number -Infinity"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3, 1e999], "label": "a"}]', r"item 0: 'bbox_2d' holds a non-finite"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3, 1' + "0" * 400 + '], "label": "a"}]', r"holds a non-finite"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3, 4], "label": }]', r"invalid JSON at offset 36: Expecting value: '}]'"),
    ("qwen25vl_json", 'x ```json\n[{"bbox_2d": [1, 2', r"invalid JSON at offset \d+"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3, 4]}]', r"item 0: missing key 'label'"),
    ("qwen25vl_json", '[{"point_2d": [1, 2], "label": "a"}]', r"item 0: missing key 'bbox_2d'"),
    ("qwen25vl_json", '[{"bbox_2d": [1, 2, 3, 4], "label": 7}]', r"'label' must be a string, got 7"),
    ("qwen25vl_json", "[[1, 2, 3, 4]]", r"item 0: expected an object"),
    ("qwenvl", "<ref>plane</ref><box>(1,2),(3,4)", r"unterminated <box> at offset 16: expected its closing tag"),
    ("qwenvl", "<ref>plane<box>(1,2),(3,4)</box>", r"unterminated <ref> at offset 0.*found <box> at offset 10"),
    ("qwenvl", "<box>(1,2),(3)</box>", r"expected '\(x1,y1\),\(x2,y2\)'.* got '\(1,2\),\(3\)'"),
    ("qwenvl", "<box>(a,2),(3,4)</box>", r"expected '\(x1,y1\),\(x2,y2\)' with integers"),
    ("qwenvl", "<box>(1,2),(3,1001)</box>", r"coordinate 1001 out of range \[0, 1000\]"),
    ("qwen2vl", "plane<|object_ref_end|>", r"unexpected <\|object_ref_end\|> at offset 5"),
    ("geochat", "{<10><20><30>|<5>}", r"expected 4 coordinates <x1><y1><x2><y2>, got 3 in box at offset 0"),
    ("geochat", "{<10><20><30><40>|<x>}", r"expected an integer angle '\|<theta>'"),
    ("geochat", "{<1.5><20><30><40>|<0>}", r"non-integer coordinate '1.5'"),
    ("geochat", "see {<10><20><30><40>|<5>", r"unterminated box at offset 4"),
    ("geochat", "{<10><20> {<10><20><30><40>}", r"unterminated box at offset 0"),
    ("geochat", "<p>plane {<10><20><30><40>|<5>}", r"unterminated '<p>' at offset 0"),
    ("geochat", "plane</p> {<10><20><30><40>|<5>}", r"unexpected '</p>' at offset 5"),
    ("vrsbench", "{<10><20><30><140>}", r"coordinate 140 out of range \[0, 100\]"),
    ("vrsbench", "{<10><20><30><40>|<5>}", r"has an angle '\|<5>'; VRSBench boxes are"),
    ("dota", "1 2 3 4 5 6 7 plane", r"line 1: expected 'x1 y1 .* \(9 or 10 fields\), got 8"),
    ("dota", "gsd:1\n1 2 3 4 5 6 7 x plane 0", r"line 2: field 8 \('x'\) is not a finite number"),
    ("dota", "1 2 3 4 5 6 7 nan plane 0", r"field 8 \('nan'\) is not a finite number"),
    ("dota", "1 2 3 4 5 6 7 1_0 plane 0", r"field 8 \('1_0'\) is not a finite number"),
    ("dota", "1 2 3 4 5 6 7 8 plane 2", r"difficult flag must be 0 or 1, got '2'"),
]


@pytest.mark.parametrize(("name", "text", "message"), MALFORMED)
def test_malformed_text_raises_codec_error_naming_the_problem(name, text, message):
    with pytest.raises(CodecError, match=message) as info:
        CODECS[name].decode(text, (1000, 1000))
    assert isinstance(info.value, ValueError)


def test_dota_error_carries_line_number():
    with pytest.raises(CodecError) as info:
        CODECS["dota"].decode("1 2 3 4 5 6 7 8 a 0\n\n1 2 3\n")
    assert info.value.line == 3


# ----------------------------------------------------------------------------- encode-time checks

DELIMITED_LABELS = [
    ("florence2_hbb", "big<plane"),
    ("florence2_hbb", "plane>"),
    ("florence2_obb", "<loc_1>"),
    ("qwenvl", "a</ref>b"),
    ("qwenvl", "x<|box_start|>"),
    ("qwen2vl", "<box>"),
    ("geochat", "a<delim>b"),
    ("geochat", "a</p>"),
    ("geochat", "{x}"),
    ("vrsbench", "a<p>"),
    ("dota", "small vehicle"),
]


@pytest.mark.parametrize(("name", "label"), DELIMITED_LABELS)
def test_labels_with_delimiters_are_refused_at_encode(name, label):
    codec = CODECS[name]
    box = [10.0, 10.0, 20.0, 5.0, 0.0] if codec.box_kind == "le90" else [10.0, 10.0, 20.0, 20.0]
    with pytest.raises(CodecError, match=r"label|category"):
        codec.encode([(label, box)], (100, 100))


@pytest.mark.parametrize("name", ["florence2_hbb", "florence2_obb", "dota"])
def test_codecs_that_need_labels_refuse_empty_ones(name):
    with pytest.raises(CodecError, match="non-empty label"):
        CODECS[name].encode([("  ", [1.0, 1.0, 5.0, 5.0])], (100, 100))


def test_labels_are_stripped():
    codec = CODECS["florence2_hbb"]
    (obj,) = codec.decode(codec.encode([("  plane 7 ", [1.0, 1.0, 5.0, 5.0])], (10, 10)), (10, 10))
    assert obj.label == "plane 7"


def test_bad_boxes_and_sizes():
    codec = CODECS["florence2_hbb"]
    with pytest.raises(GeometryError, match="NaN or inf"):
        codec.encode([("a", [0.0, float("nan"), 1.0, 1.0])], (10, 10))
    with pytest.raises(GeometryError, match="4 numbers"):
        codec.encode([("a", [0.0, 1.0, 1.0])], (10, 10))
    with pytest.raises(InputError, match=r"needs image_size=\(width, height\)"):
        codec.encode([("a", [0.0, 0.0, 1.0, 1.0])])
    with pytest.raises(InputError, match="positive finite"):
        codec.decode("", (0, 10))
    with pytest.raises(InputError, match="sep must be"):
        Florence2Codec(sep="|")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="spelling must be"):
        QwenVLCodec(spelling="qwen3")  # type: ignore[arg-type]


def test_geochat_accepts_polygons_and_hbbs_and_writes_unclipped_extents():
    codec = GeoChatCodec()
    size = (100, 100)
    assert codec.encode([("", [10, 20, 30, 40])], size) == "{<10><20><30><40>|<90>}"
    square_45 = obb_to_poly([20.0, 20.0, 28.28, 28.28, math.pi / 4])
    assert codec.encode([("", square_45)], size).endswith("|<45>}")
    # a long box at 45 degrees near the corner: inside the image, unrotated extent is not
    long_45 = [35.0, 35.0, 80.0, 10.0, math.pi / 4]
    assert np.asarray(obb_corners(long_45)).min() >= 0
    text = codec.encode([("", long_45)], size)
    assert text == "{<-5><30><75><40>|<45>}"
    np.testing.assert_allclose(codec.decode(text, size)[0].box, long_45, atol=1e-12)
    assert isinstance(VRSBenchCodec(), BoxCodec) and isinstance(DotaCodec(), BoxCodec)
