"""Benchmark readers: VLMEvalKit TSV (with image references), `datasets` on disk, named downloads."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ddp_eval.config import DataConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.load import download_benchmark, load_benchmark


def png_b64(color="red", size=(40, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def rows(n=3):
    out = []
    for i in range(n):
        out.append({"index": i, "question": f"q{i}", "hint": "h" if i == 0 else None, "A": "x", "B": "y",
                    "C": None, "D": None, "answer": "A", "category": "c", "l2-category": "l",
                    "image": png_b64(size=(40 + i, 30))})
    return out


def tsv(tmp_path: Path, data: list[dict], name="b.tsv") -> Path:
    path = tmp_path / name
    pd.DataFrame(data).to_csv(path, sep="\t", index=False)
    return path


def test_tsv_rows_options_hint_and_image_reference(tmp_path):
    data = rows(2) + [{**rows(1)[0], "index": 1_000_000, "image": "0", "A": "y", "B": "x", "answer": "B"}]
    bench = load_benchmark(DataConfig(path=str(tsv(tmp_path, data))))
    first, _, copy = bench.samples
    assert first.options == {"A": "x", "B": "y"}  # empty C, D skipped
    assert first.hint == "h" and bench.samples[1].hint is None
    assert copy.image_keys == (0,)
    assert bench.images.open(copy.image_keys[0]).size == (40, 30)
    assert "image" not in bench.table.columns


def test_reference_to_a_row_without_image_is_named(tmp_path):
    data = rows(1) + [{**rows(1)[0], "index": 5, "image": "7"}]
    with pytest.raises(DdpEvalError, match="row index 5 refers to the image of row 7"):
        load_benchmark(DataConfig(path=str(tsv(tmp_path, data))))


def test_limit_keeps_first_rows(tmp_path):
    assert len(load_benchmark(DataConfig(path=str(tsv(tmp_path, rows(3))), limit=2)).samples) == 2


@pytest.mark.parametrize("change, message", [
    (lambda d: [{k: v for k, v in r.items() if k != "question"} for r in d], "missing required column"),
    (lambda d: [{**r, "index": 1} for r in d], "duplicate index"),
    (lambda d: [{**d[0], "answer": "C"}] + d[1:], "answer 'C', which is not among its options"),
])
def test_bad_tsv_is_named(tmp_path, change, message):
    with pytest.raises(DdpEvalError, match=message):
        load_benchmark(DataConfig(path=str(tsv(tmp_path, change(rows(3))))))


def test_missing_and_non_utf8_files_are_named(tmp_path):
    with pytest.raises(DdpEvalError, match="benchmark not found"):
        load_benchmark(DataConfig(path=str(tmp_path / "absent.tsv")))
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("index\tquestion\tA\timage\n0\tcaf\xe9\tx\ty\n".encode("latin-1"))
    with pytest.raises(DdpEvalError, match="not UTF-8"):
        load_benchmark(DataConfig(path=str(bad)))


def test_corrupt_image_is_named_with_row(tmp_path):
    bench = load_benchmark(DataConfig(path=str(tsv(tmp_path, [{**rows(1)[0], "image": "A" * 100}]))))
    with pytest.raises(DdpEvalError, match="image of row index 0: cannot decode"):
        bench.images.open(0)


def test_hf_dataset_on_disk_and_as_parquet(tmp_path):
    import datasets

    data = rows(3)
    for r in data:
        r["image"] = Image.open(io.BytesIO(base64.b64decode(r["image"])))
    ds = datasets.Dataset.from_list(data).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    ds.to_parquet(str(tmp_path / "b.parquet"))
    for path in (tmp_path / "ds", tmp_path / "b.parquet"):
        bench = load_benchmark(DataConfig(path=str(path)))
        assert [s.index for s in bench.samples] == [0, 1, 2]
        assert bench.samples[0].options == {"A": "x", "B": "y"}
        assert bench.images.open(2).size == (42, 30)
        assert [s.image_keys for s in bench.samples] == [(0,), (1,), (2,)]


def test_hf_rows_with_identical_images_share_one_image_key(tmp_path):
    import datasets

    data = rows(3)
    data[2]["image"] = data[0]["image"]  # a circular copy stored with its own (identical) image
    for r in data:
        r["image"] = Image.open(io.BytesIO(base64.b64decode(r["image"])))
    ds = datasets.Dataset.from_list(data).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    bench = load_benchmark(DataConfig(path=str(tmp_path / "ds")))
    assert [s.image_keys for s in bench.samples] == [(0,), (1,), (0,)]


def test_named_benchmark_downloads_once_and_checks_md5(http_root, tmp_path):
    root, url = http_root
    body = tsv(root, rows(2), name="MMBench_DEV_EN.tsv").read_bytes()
    md5 = hashlib.md5(body).hexdigest()
    cache = tmp_path / "cache"
    path = download_benchmark("MMBench_DEV_EN", str(cache), mirror=url, md5=md5, show_progress=False)
    assert path.read_bytes() == body
    (root / "MMBench_DEV_EN.tsv").unlink()  # a second call must not need the server
    assert download_benchmark("MMBench_DEV_EN", str(cache), mirror=url, md5=md5, show_progress=False) == path
    bench = load_benchmark(DataConfig(path="MMBench_DEV_EN", cache_dir=str(cache)))
    assert bench.name == "MMBench_DEV_EN" and len(bench.samples) == 2


def test_download_with_wrong_md5_keeps_nothing(http_root, tmp_path):
    root, url = http_root
    tsv(root, rows(1), name="MMBench_DEV_CN.tsv")
    with pytest.raises(DdpEvalError, match="expected 08b8fc3324a5ed74155350f57be69fbd"):
        download_benchmark("MMBench_DEV_CN", str(tmp_path / "c"), mirror=url, show_progress=False)
    assert not any((tmp_path / "c").iterdir())


def test_a_cached_file_with_another_md5_is_named_when_it_cannot_be_downloaded_again(make_config, demo_tsv, tmp_path):
    import shutil

    from ddp_eval.run.dryrun import describe

    shutil.copy(demo_tsv, tmp_path / "MMStar.tsv")
    cfg = make_config("data.path=MMStar", f"data.cache_dir={tmp_path}", "data.mirror=http://127.0.0.1:9")
    assert "has md5 " in describe(cfg, 1) and "a run would download it again" in describe(cfg, 1)
    with pytest.raises(DdpEvalError, match=rf"the TSV at {tmp_path / 'MMStar.tsv'} has md5 \w+, not MMStar's"):
        download_benchmark("MMStar", str(tmp_path), mirror="http://127.0.0.1:9", show_progress=False)


def test_unreachable_download_names_the_url(tmp_path):
    with pytest.raises(DdpEvalError, match="cannot download MMBench_TEST_EN from http://127.0.0.1:9/"):
        download_benchmark("MMBench_TEST_EN", str(tmp_path), mirror="http://127.0.0.1:9", show_progress=False)


def test_rows_without_image_cell_read_image_path_relative_to_the_tsv(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (33, 21), "blue").save(tmp_path / "imgs" / "a.png")
    data = [{k: v for k, v in rows(1)[0].items() if k != "image"} | {"image_path": "imgs/a.png"}]
    bench = load_benchmark(DataConfig(path=str(tsv(tmp_path, data))))
    assert bench.images.open(bench.samples[0].image_keys[0]).size == (33, 21)
