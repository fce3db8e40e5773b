"""Image inputs that never end or fill memory (a FIFO, /dev/zero, a directory, a huge file) are refused,
naming the row and the path, without blocking; `--dry-run` included."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ddp_eval.config import DataConfig
from ddp_eval.data import images
from ddp_eval.errors import DdpEvalError
from ddp_eval.tasks.load import load_benchmark

TIMEOUT_S = 20


def bounded(fn, fifo: Path | None = None):
    """fn() in a thread, failing the test (not hanging it) if it has not returned after TIMEOUT_S."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the test
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    if thread.is_alive():
        if fifo is not None:  # release a reader blocked on the FIFO, so the thread can end
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"blocked for more than {TIMEOUT_S} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def bench_with_image_path(tmp_path: Path, image_path: str):
    rows = [{"index": 0, "question": "q0", "A": "x", "B": "y", "answer": "A", "image_path": "ok.png"},
            {"index": 7, "question": "q7", "A": "x", "B": "y", "answer": "A", "image_path": image_path}]
    Image.new("RGB", (33, 21), "blue").save(tmp_path / "ok.png")
    pd.DataFrame(rows).to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    return tmp_path / "b.tsv"


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The paths os.open is called with."""
    calls: list[str] = []
    real = os.open

    def spy(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(images.os, "open", spy)
    return calls


def test_fifo_image_path_is_refused_naming_row_and_path_and_never_opened(tmp_path, fifo, opened):
    bench = load_benchmark(DataConfig(path=str(bench_with_image_path(tmp_path, str(fifo)))))
    for read in (bench.images.size, bench.images.open):
        with pytest.raises(DdpEvalError) as err:
            bounded(lambda read=read: read(7), fifo)
        assert f"image of row index 7: image file {fifo} is not a regular file (a FIFO)" in str(err.value)
    assert str(fifo) not in opened
    assert bounded(lambda: bench.images.size(0)) == (33, 21)  # a regular file still reads


@pytest.mark.parametrize("target, kind", [("/dev/zero", "a character device"), ("dir", "a directory")])
def test_device_or_directory_image_path_is_refused(tmp_path, target, kind):
    if target == "dir":
        (tmp_path / "dir").mkdir()
    elif not Path(target).exists():
        pytest.skip(f"no {target}")
    bench = load_benchmark(DataConfig(path=str(bench_with_image_path(tmp_path, target))))
    with pytest.raises(DdpEvalError, match=f"row index 7: image file .*{target} is not a regular file \\({kind}\\)"):
        bounded(lambda: bench.images.size(7))


def test_image_file_above_the_bound_is_refused_naming_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 2**20)
    (tmp_path / "big.png").write_bytes(b"\0" * (2**20 + 1))
    bench = load_benchmark(DataConfig(path=str(bench_with_image_path(tmp_path, "big.png"))))
    with pytest.raises(DdpEvalError, match=r"row index 7 \(.*big.png\): the image is 1 MiB, larger than the 1 MiB "
                                           r"\(MAX_IMAGE_BYTES\)"):
        bench.images.open(7)


def test_a_file_whose_size_says_less_is_read_only_up_to_the_bound(tmp_path, monkeypatch):
    maps = Path("/proc/self/maps")  # a regular file of size 0 that reads several KiB
    if not maps.exists() or maps.stat().st_size != 0:
        pytest.skip("no /proc")
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 64)
    with pytest.raises(DdpEvalError, match=r"row 3 \(/proc/self/maps\): the image is larger than .*MAX_IMAGE_BYTES"):
        images.read_image_file(maps, "row 3")


def test_base64_cell_above_the_bound_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 1000)
    store = images.Base64Images({4: base64.b64encode(b"\0" * 1500).decode()}, {}, "b.tsv")
    with pytest.raises(DdpEvalError, match=r"b.tsv, image of row index 4: the image is about .* in base64, larger"):
        store.size(4)


def test_dataset_image_cell_naming_a_fifo_is_refused(tmp_path, fifo):
    import datasets

    from ddp_eval.data.hf_dataset import DatasetImages

    features = datasets.Features({"image": datasets.Image(decode=False)})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": None, "path": str(fifo)}]}, features=features)
    store = DatasetImages(ds, "image", "ds")
    for read in (store.size, store.open, store.encoded):
        with pytest.raises(DdpEvalError, match=r"ds, image of row 0: image file .* is not a regular file \(a FIFO\)"):
            bounded(lambda read=read: read(0), fifo)


def test_dry_run_with_a_fifo_image_path_returns(make_config, tmp_path, fifo, opened):
    from ddp_eval.run.dryrun import describe

    cfg = make_config(data=bench_with_image_path(tmp_path, str(fifo)))
    text = bounded(lambda: describe(cfg, 1), fifo)
    assert "benchmark: b (2 rows" in text and "no weights were loaded" in text
    assert str(fifo) not in opened
