"""VLMEvalKit's rule-based scores for TextVQA_VAL, DocVQA_VAL, ChartQA_TEST and OCRBench (pure).

Every rule below follows VLMEvalKit (vlmeval/dataset/image_vqa.py, vlmeval/dataset/utils/vqa_eval.py,
vlmeval/smp/misc.py) including its odd corners, because our numbers must equal theirs:

- TextVQA: both sides normalised (normalize_answer), then the VQA leave-one-out accuracy averaged
  over the ten annotators. A row with a single (non-list) answer therefore always scores 0.
- DocVQA: ANLS. The edit distance is taken on lower-cased, whitespace-collapsed strings but divided by
  the length of the raw strings; a row scores 0 when its best similarity is below 0.5.
- ChartQA: relaxed accuracy, 5% relative tolerance for numbers ('%' divides by 100), case-insensitive
  equality otherwise; a zero target is never treated as a number.
- OCRBench: the answer must be a substring of the prediction; 0/1 per row, counts per category group,
  'Final Score' out of 1000.

Each row gets `hit` in [0, 1]. Means use numpy, as VLMEvalKit does, so sums round the same way.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

import numpy as np

from ddp_eval.errors import DdpEvalError

# The number VLMEvalKit reports first for each benchmark (its primary metric).
HEADLINE_METRIC = {
    "TextVQA_VAL": "Overall",
    "DocVQA_VAL": "Overall",
    "ChartQA_TEST": "Overall",
    "OCRBench": "Final Score",
}

ANLS_THRESHOLD = 0.5
RELAXED_TOLERANCE = 0.05

# --- answer normalisation (TextVQA) -------------------------------------------------------------

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
# VLMEvalKit calls periodStrip.sub('', text, re.UNICODE): the flag lands in `count`, so at most
# re.UNICODE == 32 periods are removed.
_MAX_PERIODS_REMOVED = 32

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})

# One line per written form: the form, then the spellings that are rewritten to it. This is the
# official VQA table; its four capitalised keys (Im, Ive, Id've, I'dve) and the identity entries
# (let's, she's) are left out: words are lower-cased before lookup, so they never change anything.
_CONTRACTION_TABLE = """
ain't aint
aren't arent
can't cant
could've couldve
couldn't couldnt
couldn't've couldn'tve couldnt've
didn't didnt
doesn't doesnt
don't dont
hadn't hadnt
hadn't've hadnt've hadn'tve
hasn't hasnt
haven't havent
he'd hed
he'd've hed've he'dve
he's hes
how'd howd
how'll howll
how's hows
isn't isnt
it'd itd
it'd've itd've it'dve
it'll itll
ma'am maam
mightn't mightnt
mightn't've mightnt've mightn'tve
might've mightve
mustn't mustnt
must've mustve
needn't neednt
not've notve
o'clock oclock
oughtn't oughtnt
'ow's'at ow's'at 'ows'at 'ow'sat
shan't shant
she'd've shed've she'dve
should've shouldve
shouldn't shouldnt
shouldn't've shouldnt've shouldn'tve
somebodyd somebody'd
somebody'd've somebodyd've somebody'dve
somebody'll somebodyll
somebody's somebodys
someone'd someoned
someone'd've someoned've someone'dve
someone'll someonell
someone's someones
something'd somethingd
something'd've somethingd've something'dve
something'll somethingll
that's thats
there'd thered
there'd've thered've there'dve
there're therere
there's theres
they'd theyd
they'd've theyd've they'dve
they'll theyll
they're theyre
they've theyve
'twas twas
wasn't wasnt
we'd've wed've we'dve
we've weve
weren't werent
what'll whatll
what're whatre
what's whats
what've whatve
when's whens
where'd whered
where's wheres
where've whereve
who'd whod
who'd've whod've who'dve
who'll wholl
who's whos
who've whove
why'll whyll
why're whyre
why's whys
won't wont
would've wouldve
wouldn't wouldnt
wouldn't've wouldnt've wouldn'tve
y'all yall
y'all'll yall'll y'allll
y'all'd've yall'd've y'alld've y'all'dve
you'd youd
you'd've youd've you'dve
you'll youll
you're youre
you've youve
"""
_CONTRACTIONS = {
    spelling: form
    for form, *spellings in (line.split() for line in _CONTRACTION_TABLE.strip().splitlines())
    for spelling in spellings
}


def _strip_punctuation(text: str) -> str:
    # A mark touching a space is deleted, any other is replaced by a space; but once the text holds
    # a digit-comma-digit anywhere ("1,000"), every mark is deleted. Both tests look at the input.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if delete_all or touches_space else " ")
    return _LONE_PERIOD.sub("", out, count=_MAX_PERIODS_REMOVED)


def _words_without_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """VLMEvalKit's process_answer: punctuation, lower case, number words to digits, no articles,
    contractions restored ('dont' -> "don't")."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _words_without_articles(_strip_punctuation(text))


def parse_answers(cell: object) -> list[str]:
    """The answers of one row: a printed Python list ("['a', 'b']") gives its items, anything else
    is the single answer str(cell)."""
    if isinstance(cell, list):
        return [str(a) for a in cell]
    text = str(cell)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return [text]
    if isinstance(value, list):
        return [str(a) for a in value]
    return [text]


def _require_answers(answers: Sequence[str]) -> None:
    if not answers:
        raise DdpEvalError("a row has an empty answer list; every row needs at least one reference answer")


# --- per-row scores -------------------------------------------------------------------------------

def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """TextVQA accuracy: for each annotator, min(1, matches among the *other* answers / 3); the mean."""
    _require_answers(answers)
    pred = normalize_answer(prediction)
    refs = [normalize_answer(a) for a in answers]
    matches = [a == pred for a in refs]
    total = sum(matches)
    per_annotator = [min(1, float(total - own) / 3) for own in matches]
    return float(np.mean(per_annotator))


def _levenshtein(a: str, b: str) -> int:
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for j, cb in enumerate(b, start=1):
        current = [j]
        for i, ca in enumerate(a, start=1):
            cost = 0 if ca == cb else 1
            current.append(min(previous[i] + 1, current[i - 1] + 1, previous[i - 1] + cost))
        previous = current
    return previous[-1]


def anls_distance(answer: str, prediction: str) -> float:
    """Normalised edit distance of VLMEvalKit's anls_compute (0 = same, 1 = nothing shared)."""
    dist = _levenshtein(" ".join(answer.lower().split()), " ".join(prediction.lower().split()))
    # The denominator is the raw lengths (unstripped, upper-cased), not the compared strings.
    length = max(len(answer.upper()), len(prediction.upper()))
    return 0.0 if length == 0 else float(dist) / float(length)


def anls_score(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """DocVQA: 1 - the smallest distance over the answers, or 0 when that is below the threshold."""
    _require_answers(answers)
    similarity = 1 - min(anls_distance(a, prediction) for a in answers)
    return 0.0 if similarity < threshold else float(similarity)


def _as_number(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_match(answer: str, prediction: str, tolerance: float = RELAXED_TOLERANCE) -> bool:
    """pix2struct's relaxed correctness, as VLMEvalKit copies it."""
    pred_number, target_number = _as_number(prediction), _as_number(answer)
    if pred_number is not None and target_number:  # a zero target falls through to string equality
        return abs(pred_number - target_number) / abs(target_number) <= tolerance
    return prediction.lower() == answer.lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """ChartQA: 1.0 if the stripped prediction relaxed-matches any answer (answers are not stripped)."""
    _require_answers(answers)
    pred = prediction.strip()
    return float(max(relaxed_match(a, pred) for a in answers))


OCRBENCH_HME = "Handwritten Mathematical Expression Recognition"
# VLMEvalKit's report groups, in its order, and the TSV categories each one adds up.
OCRBENCH_GROUPS = {
    "Text Recognition": (
        "Regular Text Recognition", "Irregular Text Recognition", "Artistic Text Recognition",
        "Handwriting Recognition", "Digit String Recognition", "Non-Semantic Text Recognition",
    ),
    "Scene Text-centric VQA": ("Scene Text-centric VQA",),
    "Doc-oriented VQA": ("Doc-oriented VQA",),
    "Key Information Extraction": ("Key Information Extraction",),
    OCRBENCH_HME: (OCRBENCH_HME,),
}
OCRBENCH_CATEGORIES = tuple(c for members in OCRBENCH_GROUPS.values() for c in members)


def _check_ocrbench_category(category: object) -> None:
    if category not in OCRBENCH_CATEGORIES:
        raise DdpEvalError(
            f"OCRBench: unknown category {category!r}; the category column must hold one of "
            f"{list(OCRBENCH_CATEGORIES)}"
        )


def ocrbench_hit(prediction: str, answers: Sequence[str], category: str) -> float:
    """1.0 if any answer is a substring of the prediction. Formulas (HME): case kept, every space and
    newline dropped. Other categories: lower case, ends stripped, newlines read as spaces."""
    _check_ocrbench_category(category)
    squeeze = _formula_form if category == OCRBENCH_HME else _text_form
    pred = squeeze(str(prediction))
    return float(any(squeeze(a) in pred for a in answers))


def _formula_form(text: str) -> str:
    return text.strip().replace("\n", " ").replace(" ", "")


def _text_form(text: str) -> str:
    return text.lower().strip().replace("\n", " ")


_ROW_RULES = {"TextVQA_VAL": vqa_score, "DocVQA_VAL": anls_score, "ChartQA_TEST": relaxed_accuracy}


def _check_dataset(dataset: str) -> None:
    if dataset not in HEADLINE_METRIC:
        raise DdpEvalError(f"no VQA scoring rule for dataset {dataset!r}; known: {sorted(HEADLINE_METRIC)}")


def row_hit(dataset: str, prediction: object, answer: object, category: str | None = None) -> float:
    """The row score of `dataset` from the raw prediction and answer cells (both read as str(...),
    as VLMEvalKit does; a missing prediction therefore reads 'nan'). OCRBench needs the category."""
    _check_dataset(dataset)
    answers = parse_answers(answer)
    if dataset == "OCRBench":
        return ocrbench_hit(str(prediction), answers, category)
    return _ROW_RULES[dataset](str(prediction), answers)


def scored_prediction(dataset: str, prediction: object, category: str | None = None) -> str:
    """The prediction as `dataset`'s rule compares it (predictions.tsv's `extracted`): TextVQA's normalised
    answer, DocVQA's lower-cased and whitespace-collapsed text, ChartQA's stripped text, OCRBench's
    lower-cased stripped text (formulas: without spaces)."""
    _check_dataset(dataset)
    text = str(prediction)
    if dataset == "TextVQA_VAL":
        return normalize_answer(text)
    if dataset == "DocVQA_VAL":
        return " ".join(text.lower().split())
    if dataset == "ChartQA_TEST":
        return text.strip()
    return _formula_form(text) if category == OCRBENCH_HME else _text_form(text)


# --- aggregation ------------------------------------------------------------------------------------

def _percent(hits: Sequence[float]) -> float:
    return float(np.mean(hits) * 100)


def _check_lengths(hits: Sequence[float], labels: Sequence[object] | None, what: str) -> None:
    if labels is not None and len(labels) != len(hits):
        raise DdpEvalError(f"{len(hits)} row scores but {len(labels)} {what} labels; pass one label per row")


def vqa_metrics(
    hits: Sequence[float], splits: Sequence[str] | None = None, categories: Sequence[str] | None = None
) -> dict[str, float]:
    """ImageVQADataset's table, in percent. With a split column (ChartQA: test_human / test_augmented,
    DocVQA: val): one entry per split, then 'Overall'. Without: 'Overall', then one entry per sorted
    category if there is a category column. Splits keep first-seen order (VLMEvalKit's is a set's)."""
    if len(hits) == 0:
        raise DdpEvalError("no scored rows to aggregate")
    _check_lengths(hits, splits, "split")
    _check_lengths(hits, categories, "category")
    if splits is not None:
        result = {}
        for name in dict.fromkeys(splits):
            result[name] = _percent([h for h, s in zip(hits, splits) if s == name])
        result["Overall"] = _percent(hits)
        return result
    result = {"Overall": _percent(hits)}
    if categories is not None:
        for name in sorted(set(categories)):
            result[name] = _percent([h for h, c in zip(hits, categories) if c == name])
    return result


def ocrbench_metrics(hits: Sequence[float], categories: Sequence[str]) -> dict[str, float]:
    """OCRBench's report: right answers counted per group, 'Final Score' (their sum, out of 1000 on the
    full file) and 'Final Score Norm' (Final Score / 10)."""
    _check_lengths(hits, categories, "category")
    per_category = dict.fromkeys(OCRBENCH_CATEGORIES, 0)
    for hit, category in zip(hits, categories):
        _check_ocrbench_category(category)
        per_category[category] += int(hit)
    result = {group: sum(per_category[c] for c in members) for group, members in OCRBENCH_GROUPS.items()}
    result["Final Score"] = sum(result.values())
    result["Final Score Norm"] = float(result["Final Score"]) / 10
    return result


def benchmark_metrics(
    dataset: str,
    hits: Sequence[float],
    splits: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
) -> dict[str, float]:
    """The metric table VLMEvalKit reports for `dataset`; HEADLINE_METRIC[dataset] names its main value.
    Pass splits / categories only when the TSV has that column."""
    _check_dataset(dataset)
    if dataset == "OCRBench":
        if categories is None:
            raise DdpEvalError("OCRBench: scoring needs the category column of every row")
        return ocrbench_metrics(hits, categories)
    return vqa_metrics(hits, splits, categories)
