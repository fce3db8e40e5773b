"""Small benchmark files of each task family, in VLMEvalKit's column layout, for the end-to-end tests:
a few rows, small images, several questions per image (as MME, POPE and HallusionBench ask them)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


def image_b64(n: int, size: tuple[int, int] = (56, 56)) -> str:
    """A small distinct image: a coloured square on a grey ground, its size varying with n."""
    size = (size[0] + 8 * (n % 3), size[1] + 8 * (n % 2))
    image = Image.new("RGB", size, (120 + 10 * (n % 5), 120, 120))
    ImageDraw.Draw(image).rectangle((8, 8, size[0] // 2 + 8, size[1] // 2 + 8), fill=COLORS[n % len(COLORS)])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def pope_rows() -> list[dict]:
    """POPE: three questions per image, the later ones referring to the first row's image by index."""
    rows = []
    for image in range(3):
        for q, (thing, answer) in enumerate((("dog", "Yes"), ("car", "No"), ("cat", "No"))):
            index = image * 10 + q
            rows.append({"index": index, "question": f"Is there a {thing} in the image?", "answer": answer,
                         "category": ["adversarial", "popular,random", "random"][q],
                         "image": image_b64(image) if q == 0 else str(image * 10)})
    return rows


def hallusion_rows() -> list[dict]:
    """HallusionBench: string indices <category>_<l2>_<visual>_<set>_<figure>_<question>; a reference to
    another row's image names its string index."""
    rows = []
    for figure in range(2):
        for q in range(2):
            index = f"VD_chart_1_0_{figure}_{q}"
            rows.append({"index": index, "category": "VD", "l2-category": "chart", "answer": ["Yes", "No"][q],
                         "question": f"Is the bar {COLORS[q]}?",
                         "image": image_b64(figure) if q == 0 else f"VD_chart_1_0_{figure}_0"})
    rows.append({"index": "VS_map_1_2_0_0", "category": "VS", "l2-category": "map", "answer": "No",
                 "question": "Is this a map of France?", "image": image_b64(5)})
    return rows


def textvqa_rows() -> list[dict]:
    return [{"index": i, "question": f"What is written on sign {i}?", "image": image_b64(i),
             "answer": str(["stop"] * 6 + ["stop sign"] * 4) if i % 2 == 0 else str(["exit"] * 10)}
            for i in range(4)]


def ocrbench_rows() -> list[dict]:
    categories = ["Regular Text Recognition", "Scene Text-centric VQA", "Key Information Extraction"]
    return [{"index": i, "question": "What is the text in the image?", "image": image_b64(i),
             "answer": str(["hello", "Hello!"]), "category": categories[i % 3], "dataset": "IIIT5K"}
            for i in range(3)]


def mmmu_rows() -> list[dict]:
    """MMMU_DEV_VAL: a printed list of images where a row has several, <image N> in the text (in a
    different order than stored, one in an option), an open question, dev and validation splits, and a
    row showing another row's images (a short image cell naming its index)."""
    two = str([image_b64(1), image_b64(2)])
    return [
        {"index": 1, "question": "Compare <image 2> with <image 1>. Which is larger?", "A": "<image 1>",
         "B": "the second", "C": None, "answer": "A", "image": two, "split": "dev", "category": "Art"},
        {"index": 2, "question": "What colour is <image 1>?", "A": "red", "B": "green", "C": "blue",
         "answer": "C", "image": image_b64(3), "split": "validation", "category": "Art"},
        {"index": 3, "question": "How many squares are there in total?", "A": None, "B": None, "C": None,
         "answer": "2", "image": two, "split": "validation", "category": "Math"},
        {"index": 4, "question": "Which image is brighter? <image 1> or <image 2>", "A": "first", "B": "second",
         "C": None, "answer": "B", "image": str([image_b64(4), image_b64(1)]), "split": "validation",
         "category": "Math"},
        {"index": 5, "question": "Is <image 1> to the left of <image 2>?", "A": "yes", "B": "no", "C": None,
         "answer": "A", "image": "1", "split": "validation", "category": "Art"},  # row 1's two images
    ]
