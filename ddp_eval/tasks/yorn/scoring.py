"""Yes/no benchmarks (MME, POPE, HallusionBench): reply -> Yes/No/Unknown, and each benchmark's metrics.

Follows VLMEvalKit's rule-based path (`ImageYORNDataset.evaluate` with the exact-matching judge,
`vlmeval/dataset/utils/yorn.py`), odd details included:

- extraction lower-cases the reply, strips punctuation as VLMEvalKit's `process_punctuation` does, and
  splits on whitespace; "yes" without "no" is Yes, "no" without "yes" is No, anything else Unknown;
- a row is right only if the TSV answer equals the extracted word exactly ("Yes" == "Yes"), so Unknown
  is always wrong;
- MME: per category acc (questions) + acc+ (images whose first two questions are both right, paired by
  `image_path`), summed into `perception` and `reasoning` over fixed category lists;
- POPE: a row whose category is "a,b" counts once in each split and twice in Overall; F1, precision and
  recall treat every extraction that is not Yes (Unknown included) as No;
- HallusionBench: fields 3, 4, 5 of the "_"-split string index are the set, figure and question ids;
  fAcc groups rows by (l2-category, set, figure), qAcc by (l2-category, set, question); a group is right
  only if all its rows are.

Values are percentages, as VLMEvalKit reports them. Splits that VLMEvalKit lists in set order are sorted here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ddp_eval.errors import DdpEvalError

YES, NO, UNKNOWN = "Yes", "No", "Unknown"

# VLMEvalKit's MME_rating super-categories; every one of these categories must be present.
MME_PERCEPTION = (
    "OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position", "posters", "scene",
)
MME_REASONING = ("code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation")

_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
# VLMEvalKit calls periodStrip.sub('', text, re.UNICODE): the flag (32) lands in sub()'s `count`.
_MAX_PERIODS_REMOVED = 32


@dataclass(frozen=True)
class YornRow:
    """The fields the yes/no metrics read from one TSV row plus its extracted answer."""

    index: str | int
    answer: str
    extracted: str  # Yes / No / Unknown
    category: str | None = None  # POPE: comma-separated splits; HallusionBench: VD / VS
    l2_category: str | None = None  # HallusionBench: chart, figure, map, ...
    image_path: str | None = None  # MME: pairs the two questions of one image

    @classmethod
    def from_record(cls, record: Mapping) -> YornRow:
        """From a TSV/predictions record (VLMEvalKit column names); extracts from `prediction` if needed."""
        extracted = record.get("extracted")
        if _missing(extracted):
            extracted = extract_yes_no(record.get("prediction"))
        return cls(
            index=record["index"],
            answer=str(record["answer"]),
            extracted=str(extracted),
            category=_text_or_none(record.get("category")),
            l2_category=_text_or_none(record.get("l2-category")),
            image_path=_text_or_none(record.get("image_path")),
        )


def strip_punctuation(text: str) -> str:
    """VLMEvalKit's `process_punctuation`.

    Each mark is deleted where the text has it next to a space (or anywhere, once the text has a
    digit-comma-digit), else replaced by a space; then periods not touching a digit are deleted.
    """
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        spaced = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if spaced or delete_all else " ")
    return _LONE_PERIOD.sub("", out, count=_MAX_PERIODS_REMOVED)


def extract_yes_no(reply: object) -> str:
    """'Yes', 'No' or 'Unknown' for a model reply (VLMEvalKit's `YOrN_Extraction` after `str(prediction)`)."""
    words = strip_punctuation(str(reply).lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return YES
    if has_no and not has_yes:
        return NO
    return UNKNOWN


def row_hit(row: YornRow) -> float:
    """1.0 if the extracted word equals the answer exactly (VLMEvalKit's `score` column), else 0.0."""
    return 1.0 if row.answer == row.extracted else 0.0


def mme_metrics(rows: Iterable[YornRow]) -> dict:
    """{'perception', 'reasoning', 'category': {name: {'acc', 'acc+', 'score'}}} (VLMEvalKit's `MME_rating`).

    score = acc + acc+ (max 200 per category); categories in order of first appearance.
    """
    by_image: dict[str, dict[str, list[bool]]] = {}
    for row in rows:
        by_image.setdefault(row.category, {}).setdefault(row.image_path, []).append(row.answer == row.extracted)
    categories = {}
    for name, images in by_image.items():
        acc = _mean([hit for hits in images.values() for hit in hits]) * 100
        acc_plus = _mean([_both_right(name, path, hits) for path, hits in images.items()]) * 100
        categories[name] = {"acc": acc, "acc+": acc_plus, "score": acc + acc_plus}
    missing = [c for c in MME_PERCEPTION + MME_REASONING if c not in categories]
    if missing:
        raise DdpEvalError(
            f"MME scores need all 14 categories; missing {', '.join(missing)}. Score the full MME TSV "
            "(VLMEvalKit's MME_rating fails the same way)"
        )
    return {
        "perception": sum(categories[c]["score"] for c in MME_PERCEPTION),
        "reasoning": sum(categories[c]["score"] for c in MME_REASONING),
        "category": categories,
    }


def pope_metrics(rows: Iterable[YornRow]) -> dict:
    """{split: {'Overall' (F1), 'acc', 'precision', 'recall'}}, 'Overall' first (VLMEvalKit's `POPE_rating`)."""
    exploded = [(split, row) for row in rows for split in _pope_splits(row)]
    result = {"Overall": _pope_split([row for _, row in exploded])}
    for name in sorted({split for split, _ in exploded if split is not None}):
        result[name] = _pope_split([row for split, row in exploded if split == name])
    return result


def hallusion_metrics(rows: Iterable[YornRow]) -> dict:
    """{split: {'aAcc', 'fAcc', 'qAcc'}}: 'Overall', then each category, then each l2-category.

    VLMEvalKit's `Hallusion_rating`.
    """
    rows = list(rows)
    result = {"Overall": _hallusion_split(rows)}
    for field in ("category", "l2_category"):
        for name in sorted({getattr(r, field) for r in rows if getattr(r, field) is not None}):
            result[name] = _hallusion_split([r for r in rows if getattr(r, field) == name])
    return result


def metrics_for(dataset: str, rows: Iterable[YornRow]) -> dict:
    """The rating VLMEvalKit picks by substring of the dataset name, in its order."""
    if "MME" in dataset:
        return mme_metrics(rows)
    if "Hallusion" in dataset:
        return hallusion_metrics(rows)
    if "POPE" in dataset:
        return pope_metrics(rows)
    raise DdpEvalError(f"no yes/no rating for dataset {dataset!r}; known: MME, POPE, HallusionBench")


def headline(dataset: str, metrics: dict) -> tuple[str, float]:
    """(name, value) of the number a benchmark is quoted by on the OpenVLM leaderboard.

    MME: perception + reasoning (max 2800); POPE: Overall F1; HallusionBench: mean of the Overall
    aAcc, fAcc and qAcc.
    """
    if "MME" in dataset:
        return "perception+reasoning", metrics["perception"] + metrics["reasoning"]
    if "Hallusion" in dataset:
        overall = metrics["Overall"]
        return "Overall mean(aAcc,fAcc,qAcc)", (overall["aAcc"] + overall["fAcc"] + overall["qAcc"]) / 3
    if "POPE" in dataset:
        return "Overall F1", metrics["Overall"]["Overall"]
    raise DdpEvalError(f"no yes/no headline for dataset {dataset!r}; known: MME, POPE, HallusionBench")


def _both_right(category: str, image_path: str | None, hits: list[bool]) -> bool:
    # VLMEvalKit multiplies the first two results of an image (a third is ignored; one alone fails).
    if len(hits) < 2:
        raise DdpEvalError(
            f"MME image {image_path!r} (category {category}) has {len(hits)} question; acc+ needs its pair. "
            "Score the full MME TSV"
        )
    return hits[0] and hits[1]


def _pope_splits(row: YornRow) -> list[str | None]:
    # pandas str.split(',') + explode: no stripping; a missing category stays one row with no split.
    return [None] if row.category is None else row.category.split(",")


def _pope_split(rows: list[YornRow]) -> dict[str, float]:
    truth = [row.answer == YES for row in rows]
    said_yes = [row.extracted == YES for row in rows]
    tp = sum(t and p for t, p in zip(truth, said_yes))
    fp = sum(p and not t for t, p in zip(truth, said_yes))
    fn = sum(t and not p for t, p in zip(truth, said_yes))
    precision = tp / (tp + fp) if tp + fp else 0
    recall = tp / (tp + fn) if tp + fn else 0
    f1 = 2 * (precision * recall) / (precision + recall) if precision + recall else 0
    return {
        "Overall": f1 * 100,
        "acc": _mean([row.answer == row.extracted for row in rows]) * 100,
        "precision": precision * 100,
        "recall": recall * 100,
    }


def _hallusion_ids(row: YornRow) -> tuple[str, str, str]:
    parts = str(row.index).split("_")
    if len(parts) < 6:
        raise DdpEvalError(
            f"HallusionBench index {row.index!r} is not <category>_<l2>_<visual>_<set>_<figure>_<question>; "
            "use the TSV's string indices unchanged"
        )
    return parts[3], parts[4], parts[5]


def _hallusion_split(rows: list[YornRow]) -> dict[str, float]:
    figures: dict[str, list[bool]] = {}
    questions: dict[str, list[bool]] = {}
    for row in rows:
        set_id, figure_id, question_id = _hallusion_ids(row)
        hit = row.answer == row.extracted
        # VLMEvalKit keys the groups by l2-category, not category: a VD and a VS row can share one.
        figures.setdefault(f"{row.l2_category}_{set_id}_{figure_id}", []).append(hit)
        questions.setdefault(f"{row.l2_category}_{set_id}_{question_id}", []).append(hit)
    return {
        "aAcc": _mean([row.answer == row.extracted for row in rows]) * 100,
        "fAcc": _mean([all(hits) for hits in figures.values()]) * 100,
        "qAcc": _mean([all(hits) for hits in questions.values()]) * 100,
    }


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _text_or_none(value: object) -> str | None:
    return None if _missing(value) else str(value)
