"""Reading VLMEvalKit's TSVs: a non-UTF-8 file names the bad byte's offset and line, an image cell may
hold a printed list of images (never eval'd), image_path likewise, string indices keep their references."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tiny_benchmarks import image_b64

from ddp_eval.data.cells import cell_list, sample_indices
from ddp_eval.data.tsv import load_tsv, read_table
from ddp_eval.errors import DdpEvalError


def test_non_utf8_file_names_the_bad_bytes_offset_in_the_file_and_its_line(tmp_path):
    header = "index\tquestion\tA\tB\timage\n"
    first = "0\t" + "q" * 40 + "\tx\ty\tabc\n"
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes((header + first).encode() + "1\tcaf\xe9\tx\ty\tabc\n".encode("latin-1"))
    offset = len(header) + len(first) + len("1\tcaf")
    with pytest.raises(DdpEvalError, match=rf"invalid continuation byte: byte 0xe9 at byte offset {offset}, line 3\)"):
        read_table(bad)


def test_cell_list_parses_printed_lists_literally_and_leaves_other_text():
    assert cell_list("['aGVsbG8=', 'd29ybGQ=']") == ["aGVsbG8=", "d29ybGQ="]
    assert cell_list("aGVsbG8=") == ["aGVsbG8="]
    with pytest.raises(ValueError, match="no Python list"):
        cell_list("[__import__('os').system('true')]")


def test_integer_indices_are_kept_and_any_other_index_column_gives_row_positions():
    assert sample_indices([3, 1_000_003, 5.0], "f") == [3, 1_000_003, 5]
    assert sample_indices(["VD_1", "VD_2", 7], "f") == [0, 1, 2]
    with pytest.raises(DdpEvalError, match="duplicate index value"):
        sample_indices(["a", "a"], "f")


def write_rows(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_several_images_from_image_path_lists_relative_to_the_tsv(tmp_path):
    (tmp_path / "img").mkdir()
    for name, size in (("a.png", (30, 20)), ("b.png", (40, 25))):
        Image.new("RGB", size, "blue").save(tmp_path / "img" / name)
    rows = write_rows(tmp_path / "b.tsv", [{"index": 7, "question": "q", "image_path": "['img/a.png', 'img/b.png']"},
                                           {"index": 8, "question": "q", "image_path": "img/b.png"}])
    raw = load_tsv(rows)
    assert raw.image_keys == [((7, 0), (7, 1)), (8,)]
    assert [raw.images.open(k).size for k in raw.image_keys[0]] == [(30, 20), (40, 25)]


def test_a_reference_to_a_multi_image_row_shows_all_its_images_and_a_bad_list_is_named(tmp_path):
    two = str([image_b64(1), image_b64(2)])
    raw = load_tsv(write_rows(tmp_path / "b.tsv", [{"index": "x_1", "image": two}, {"index": "x_2", "image": "x_1"}]))
    assert raw.image_keys == [(("x_1", 0), ("x_1", 1))] * 2
    bad = "[" + "'" + image_b64(1) + "', oops]"
    with pytest.raises(DdpEvalError, match="row index 3: the image cell starts with"):
        load_tsv(write_rows(tmp_path / "c.tsv", [{"index": 3, "image": bad}]))


def _b64(image: Image.Image, fmt: str = "PNG") -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def _noise(mode: str, size=(48, 40)) -> Image.Image:
    import numpy as np

    bands = len(Image.new(mode, (1, 1)).getbands())
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if bands == 1 else pixels, mode if mode != "P" else "L").convert(mode)


def test_base64_images_reach_the_model_as_vlmevalkit_dumps_them_to_disk(tmp_path):
    """VLMEvalKit decodes a base64 cell (RGBA, P, LA, CMYK to RGB, the alpha dropped), saves it to
    `<index>.png` or the row's image_path, and its model reads that file: a .jpg image_path (MME) is a
    JPEG at PIL's default quality. Here the same steps run on disk, as VLMEvalKit's dump_image does them."""
    rgba, rgb = _noise("RGBA"), _noise("RGB")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 3
    rows = write_rows(tmp_path / "b.tsv", [
        {"index": 1, "question": "q", "image": _b64(rgba)},
        {"index": 2, "question": "q", "image": _b64(palette)},
        {"index": 3, "question": "q", "image": _b64(rgb), "image_path": "mme/3.jpg"},
        {"index": 4, "question": "q", "image": _b64(rgba), "image_path": "mme/4.png"},
        {"index": 5, "question": "q", "image": _b64(rgb)},
    ])
    raw = load_tsv(rows)

    def dumped(image: Image.Image, name: str) -> Image.Image:  # decode_base64_to_image_file, then the model's open
        if image.mode in ("RGBA", "P", "LA", "CMYK"):
            image = image.convert("RGB")
        image.save(tmp_path / name)
        return Image.open(tmp_path / name)

    expected = {1: dumped(rgba, "1.png"), 2: dumped(Image.open(io_bytes(_b64(palette))), "2.png"),
                3: dumped(rgb, "3.jpg"), 4: dumped(rgba, "4.png"), 5: rgb}
    for key, image in expected.items():
        got = raw.images.open(key)
        assert got.mode == "RGB" and got.tobytes() == image.convert("RGB").tobytes(), key
    assert raw.images.open(3).tobytes() != rgb.tobytes()  # the JPEG round trip does change pixels
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    assert raw.images.open(1).tobytes() != white.tobytes()  # not composed onto white (qwen_vl_utils' to_rgb)


def io_bytes(cell: str):
    import base64
    import io

    return io.BytesIO(base64.b64decode(cell))


def test_an_image_file_that_image_path_names_is_read_as_it_is(tmp_path):
    _noise("RGBA").save(tmp_path / "a.png")
    raw = load_tsv(write_rows(tmp_path / "b.tsv", [{"index": 1, "question": "q", "image_path": "a.png"}]))
    assert raw.images.open(1).mode == "RGBA"  # VLMEvalKit's model opens the file itself: no conversion first


def test_rows_without_an_image_cell_are_left_out_as_vlmevalkit_does(tmp_path, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("ddp_eval"), "propagate", True)
    rows = [{"index": 1, "question": "q", "image": image_b64(1)}, {"index": 2, "question": "q", "image": None},
            {"index": 3, "question": "q", "image": "1"}]
    with caplog.at_level(logging.WARNING, logger="ddp_eval"):
        raw = load_tsv(write_rows(tmp_path / "b.tsv", rows))
    assert list(raw.table["index"]) == [1, 3] and raw.image_keys == [(1,), (1,)]
    assert "1 row(s) without an image left out" in caplog.text and "(index 2)" in caplog.text
    with pytest.raises(DdpEvalError, match="every row's image cell is empty"):
        load_tsv(write_rows(tmp_path / "c.tsv", [{"index": 1, "question": "q", "image": None}]))


@pytest.mark.parametrize(("index", "said"), [(None, r"1 row\(s\) with an empty index cell \(line 3\)"),
                                             (4.5, r"index value\(s\) 4.5 are not whole numbers"),
                                             (1_000_000, r"duplicate index value\(s\) 1000000")])
def test_an_empty_fractional_or_repeated_index_is_named_before_image_references(tmp_path, index, said):
    """Each would otherwise turn the indices into text (CircularEval gone unnoticed) or be reported as a
    reference to a row without an image."""
    rows = [{"index": 0, "question": "q", "image": image_b64(1)}, {"index": index, "question": "q", "image": "0"},
            {"index": 1_000_000, "question": "q", "image": "0"}]
    with pytest.raises(DdpEvalError, match=said):
        load_tsv(write_rows(tmp_path / "b.tsv", rows))
