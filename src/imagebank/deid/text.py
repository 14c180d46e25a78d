"""Free-text scrubbing: report texts, comments and descriptions with their identifiers taken out.

Free text is where structured de-identification leaks: a report repeats the patient's name, MRN and
birth date in its header, names the referring physician, quotes a phone number for call-backs and dates
every prior. DICOM PS3.15 E.3.5 (Clean Descriptors Option) requires such descriptions and comments to be
cleaned of identifying information when they are kept, and HIPAA Safe Harbor (45 CFR 164.514(b)(2))
lists what must go: names, geographic subdivisions smaller than a state (street, city, ZIP code), all
elements of dates except the year, phone and fax numbers, e-mail addresses, URLs, record and account
numbers and any other unique identifying number, and ages over 89.

Two complementary sources find them:

- what is **known** about this patient (:class:`~imagebank.deid.identifiers.KnownIdentifiers`: their
  names, IDs, dates, address, phone...) is searched exactly *and* approximately: case and accents do not
  matter, a name part of 5+ letters is still found with one typo ("Jonhson"), initials next to a known
  name are taken with it ("J. Doe", "Doe, J."), IDs are found with separators added or dropped. This is
  the only way to find a bare surname in a sentence ("Doe reports pain"): nothing else marks it as a name.
- general **patterns** find what nobody told us: names after a title or a label ("Dr.", "signed by",
  "Patient:"), dates in the common written forms, phone numbers, e-mails, URLs, labelled and long
  numbers, street addresses, ZIP codes, institution names and ages over 89.

Replacements are bracketed tokens (``[NAME]``, ``[ID]``...), ages over 89 become ``90+``, and dates
become ``[DATE]`` or, given the patient's date shift, the shifted date written the way the original was
(``03/05/2024`` -> ``01/17/2022``): intervals between dates stay exact, which is what the Retain
Longitudinal Temporal Information with Modified Dates Option (PS3.15 E.3.6) is for.

Clinical content is protected on purpose: measurements, scores (BI-RADS, Gleason, PI-RADS), vertebral
levels, times, doses, series/image numbers and codes in parentheses are not numbers that identify
anybody, and eponyms ("Parkinson's disease") are not taken as names by the pattern rules.

The module is pure (no I/O) and built for millions of reports: every regex is compiled once at import;
the places where a pattern can start (numbers, trigger words such as "Dr", "MRN", month names) are
found first and each family's regex is matched only there; a patient's identifiers are prepared once
(cached) into dictionaries, never into regexes; known names are looked up once per distinct word, and
the one-typo comparison runs only against name parts of the same first or last letter and a length
within one. About 1,000 reports of 1 KB per second on one core (``benchmarks/deid_text_recall.py``).
"""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache

from imagebank.deid.identifiers import MIN_ID_LENGTH, MIN_NAME_PART, KnownIdentifiers, normalize

#: Every category a finding can have.
CATEGORIES = ("name", "id", "date", "phone", "email", "url", "address", "zip", "institution", "age")
#: What replaces each category (dates are shifted instead when a shift is given).
REPLACEMENTS: dict[str, str] = {c: f"[{c.upper()}]" for c in CATEGORIES} | {"age": "90+"}
# When overlapping findings of equal length merge, the one named first wins.
_PRIORITY = {c: i for i, c in enumerate(("email", "url", "date", "phone", "id", "address", "zip", "institution",
                                           "name", "age"))}
#: Name parts of at least this many letters are also found with one typo (edit or adjacent transposition).
FUZZY_MIN_PART = 5


@dataclass(frozen=True, slots=True)
class Finding:
    """One identifier found: ``text[start:end]`` of the *original* text, and what replaced it."""

    start: int
    end: int
    category: str
    replacement: str


@dataclass(frozen=True)
class ScrubResult:
    text: str  # the scrubbed text
    findings: list[Finding]  # sorted, not overlapping, offsets into the original text


# ---------------------------------------------------------------------------------------------- vocabularies


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that end a name after a title or a label ("signed by Dr. Lopez on ...") and never start one.
_STOP = _words("""
    a an and or of on at in to for with by from as is was were be been has have had this that these those his her
    their its our your my he she they we you it i no not nor but if then than so per via who whom which what when
    where why how all any some each both other such same re see seen the please
    mrn dob id age sex gender date exam accession acc phone tel fax email e-mail pager ext institution hospital
    facility history clinical indication indications technique comparison comparisons findings finding impression
    conclusion report addendum recommendation recommendations signed dictated electronically transcribed reviewed
    verified time study procedure modality series image page ssn address zip city state room bed ward unit
    department dept md do phd rn rt facr frcr frcpc mbbs mph msc np pa dds radiologist radiology physician
    technologist resident attending fellow patient patients name reason order ordered reading
    ct cta mr mri mra us pet spect xr cr dx mg nm dexa er ed icu or
    """)

# Common English and radiology words. A token in this list is never taken as a one-typo variant of a
# known name ("while" is one edit from "White", "bones" from "Jones"), a known name that *is* such a word
# ("Young", "White", "Mark") is only taken where it is written as a name (capitalised, or next to another
# part of the name), and a lower-case word in it ends a name after a title.
COMMON_WORDS = _STOP | _words("""
    about above across after again against ago along already also although always am among another anterior
    appear appears approximately are area areas around ask asked back bad based because become before behind
    being below best better between beyond big black blue body bone bones both bright brown but call called came
    can cannot care case cause center change changes check clear close come could day days did different does
    done down during each early east either else end enough even ever every fall far few first five follow
    following found four free full further get give given go going good great green grey gray group grown had
    half hand hard head hear heard help here high hill him himself home hope house however hundred just keep
    kind king know known large last late later least left less let life like likely line little long look low
    made main make many mark marked may me mean might mild mile mill more most moving much must near need never
    new next nine normal north now number old once one only open over own park part past people place point
    possible prior put quite rather read real right rose round said saw say says second seems seven several
    shall short should show shown side since six small some something soon south still stone such sure take
    taken ten than thank three through thus today together too took toward towards turn turned two under until
    up upon us use used very view wall want well went west while white whole will within without word work
    would write year years yes yet young zone zones tone tones belly jelly alien crown greet mania media petal
    rivers river killer milder filler walked talker talks macro hall halls bell bells baker long lane street
    road avenue drive court wood woods field fields brook bank banks walls wells miles mills hills stones rich
    frank ward wards page strong stone
    abdomen abdominal abnormal abnormality abscess acute adenopathy adjacent adrenal air airspace airway
    alignment anatomy aneurysm angle ankle anomaly aorta aortic apex apical appendix arch arterial artery
    arteries ascites aspect assessment atelectasis atrophy atypical axial axillary background basal base bases
    benign bilateral biopsy bladder bleeding blood border bowel brain breast breasts bronchial bulge calcified
    calcification calcifications caliber canal cancer cardiac cardiomegaly carcinoma cartilage cavity cell
    central cerebral cervical chest chronic circumscribed clinically collection colon communicated compared
    compression consistent consolidation contrast cord coronal cortex cortical cyst cysts debris decrease
    decreased defect deformity degenerative dense density diagnosis diameter diffuse dilatation dilated disc
    discs discussed disease disorder distal distortion diverticulitis duct ducts echo edema effusion effusions
    enhancement enhancing enlarged enlargement evaluation evidence examination extension external fat fatty
    femoral femur fibroglandular fibrosis fluid focal foci focus follow fossa fracture fractures frontal gallbladder
    gland glands grade gross heart hematoma hemorrhage hepatic hernia herniation hilar hip hyperintense
    hypodense hypoechoic hypointense ileum iliac imaging impingement increase increased infarct infection
    inferior inflammation inflammatory injury intact internal interval intracranial joint joints kidney kidneys
    knee lateral lesion lesions ligament ligaments limits liver lobe lobes lower lumbar lung lungs lymph
    lymphadenopathy malignancy malignant margin margins marker mass masses measure measured measures measuring
    medial mediastinal mediastinum metastasis metastases metastatic midline minimal moderate motion multiple
    muscle muscles narrowing neck negative nerve nerves nipple nodal node nodes nodular nodule nodules
    obstruction occlusion opacity orbit osseous pain pancreas parenchyma pathology pelvic pelvis peripheral
    pleural positive posterior postoperative present previous probably process prostate proximal pulmonary
    quadrant radiograph radiographs recommend recommended region renal residual resolved rib ribs sagittal
    scan scans segment segments seminal severe shoulder sign signal signs sinus size skin skull small soft
    spine spinal spleen stable stenosis structure structures subtle suggest suggestive superior surgery
    suspicious swelling symptoms tear technique tendon tendons thickening thoracic thyroid tissue tissues
    tumor tumour ultrasound unchanged unremarkable upper ureter uterus vascular vein veins ventricle ventricles
    vertebral vessel vessels views volume weight wrist
    """)

# Eponyms of diseases, signs and scores: never a person's name for the *pattern* rules (a known name of
# the patient is still found). "Patient: Parkinson's disease follow-up" must keep its diagnosis.
EPONYMS = _words("""
    parkinson parkinsons crohn crohns alzheimer alzheimers hodgkin hodgkins graves hashimoto cushing addison
    huntington wilms ewing kaposi paget raynaud sjogren tourette wernicke korsakoff guillain barre bosniak
    fleischner gleason fazekas kurtzke lugano breslow salter colles galeazzi monteggia schmorl tarlov virchow
    meckel zenker boerhaave chiari dandy modic pfirrmann meyerding spetzler glasgow pugh ranson balthazar
    barrett bankart segond hill-sachs osgood legg perthes kienbock kummell charcot whipple hirschsprung
    """)

# Words after an eponym that show it is one ("Baker's cyst", "Parkinson disease").
_EPONYM_FOLLOWERS = ("disease", "syndrome", "sign", "fracture", "lymphoma", "sarcoma", "tumor", "tumour", "cyst",
                     "score", "scale", "criteria", "classification", "grade", "node", "nodes", "lesion", "type",
                     "guidelines", "guideline", "phenomenon", "palsy", "deformity", "malformation", "ulcer")

# Name particles: part of a name only next to the rest of it ("de Vries", "van der Berg").
_PARTICLES = _words("de da di del della der den van von la le du dos das ten ter bin ibn al el mac st y")
# Titles and degrees that DICOM person names carry ("House^Gregory^^Dr.") but that are not the name.
_HONORIFICS = _words("dr mr mrs ms mx prof md phd rn rt")

_UNITS = (r"(?:mm|cm|m|km|ml|mL|l|L|dl|dL|mg|g|kg|mcg|ug|µg|ng|pg|mmol|umol|µmol|mol|meq|mEq|iu|IU|u|U|units?|"
          r"%|hu|HU|ms|s|sec|min|h|hr|hrs|hours?|days?|weeks?|months?|years?|bpm|mmhg|mmHg|cc|gy|Gy|mgy|mGy|msv|"
          r"mSv|kv|kV|kvp|kVp|mas|mAs|ma|mA|t|T|x|fold|times|cells|copies|counts?|beats)")
_UNIT_AFTER = re.compile(r"\s*(?:/|" + _UNITS + r"\b)")
_CODE_BEFORE = re.compile(r"(?i)(?:snomed(?:\s*ct)?|loinc|icd(?:-?\d{1,2})?(?:-?cm)?|cpt|rxnorm|hgnc|code|codes|"
                          r"omim|hcpcs|ndc|cui)\s*[:#]?\s*$")


# ---------------------------------------------------------------------------------------------- public API


def scrub_text(text: str, known: KnownIdentifiers | None = None, *,
               shift: Callable[[dt.date], dt.date] | None = None,
               institutions: Iterable[str] = ()) -> ScrubResult:
    """Remove the identifiers from ``text``.

    Parameters
    ----------
    text
        A report, comment or description of one patient.
    known
        What the patient's record says about them. Without it only the patterns apply, and a bare
        surname in a sentence cannot be found: pass it whenever the patient is known.
    shift
        The patient's date shift (for instance ``lambda d: pseudonymizer.shift_date(d, subject)``). Dates
        are then replaced by the shifted date in the format they were written in; without it by
        ``[DATE]``. A date that cannot be shifted (out of range) becomes ``[DATE]``.
    institutions
        Names of institutions to remove wherever they appear (the archive's own sites and their
        abbreviations), on top of the names found by pattern ("... Hospital", "... Medical Center").

    Returns
    -------
    ScrubResult
        The scrubbed text and the findings, sorted and merged: overlapping findings become one covering
        all of them, with the category of the longest.
    """
    hits: list[_Hit] = []
    sites = frozenset(n.strip() for n in institutions if len(n.strip()) >= MIN_NAME_PART)
    if known is not None or sites:
        matcher = _matcher(frozenset(known.names) if known else frozenset(),
                           frozenset(known.name_parts) if known else frozenset(),
                           frozenset(known.ids) if known else frozenset(),
                           frozenset(known.other) if known else frozenset(), sites)
        folded = _Folded(text)
        hits.extend(matcher.names(text, folded))
        hits.extend(matcher.strings(text, folded))
    if known is not None and known.dates:
        hits.extend(_known_compact_dates(text, known.dates))
    hits.extend(_pattern_hits(text, shift, known.dates if known is not None else frozenset()))
    findings = _merge(hits)
    out, last = [], 0
    for f in findings:
        out.append(text[last:f.start])
        out.append(f.replacement)
        last = f.end
    out.append(text[last:])
    return ScrubResult("".join(out), findings)


# ---------------------------------------------------------------------------------------------- internals

# (start, end, category, replacement)
_Hit = tuple[int, int, str, str]


def _merge(hits: list[_Hit]) -> list[Finding]:
    """Overlapping hits become one finding: the union of their spans, replaced as the longest says."""
    if not hits:
        return []
    hits.sort(key=lambda h: (h[0], -h[1]))
    findings: list[Finding] = []
    cluster: list[_Hit] = [hits[0]]
    end = hits[0][1]

    def close() -> None:
        if len(cluster) == 1:
            findings.append(Finding(*cluster[0]))
            return
        # The longest; between equals, the category named first, and a shifted date over "[DATE]".
        best = max(cluster, key=lambda h: (h[1] - h[0], -_PRIORITY[h[2]], h[3] != REPLACEMENTS[h[2]]))
        start = cluster[0][0]
        if best[0] == start and best[1] == end:
            findings.append(Finding(start, end, best[2], best[3]))
        else:  # a partial overlap: the union is replaced by the category token (a shifted date would lie)
            findings.append(Finding(start, end, best[2], REPLACEMENTS[best[2]]))

    for hit in hits[1:]:
        if hit[0] < end:
            cluster.append(hit)
            end = max(end, hit[1])
        else:
            close()
            cluster, end = [hit], hit[1]
    close()
    return findings


_EXTRA_FOLD = str.maketrans({"ı": "i", "ł": "l", "ø": "o", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe",
                             "\u2019": "'"})


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """``normalize`` plus the letters NFKD does not decompose ("Yılmaz" is written "Yilmaz" in ASCII)."""
    return normalize(ch).translate(_EXTRA_FOLD)


def _fold(text: str) -> str:
    return text.lower() if text.isascii() else "".join(_fold_char(c) for c in text)


class _Folded:
    """The text lower-cased and without accents, with a map from its offsets back to the original.

    Known identifiers are compared on this form ("Müller" == "MULLER"). NFKD may change lengths (a
    decomposed accent disappears, "ß" becomes "ss"), so the map is piecewise: breakpoints are recorded
    only where a character does not fold to exactly one character, which is rare.
    """

    __slots__ = ("text", "_fold", "_orig", "_length")
    _NON_ASCII = re.compile(r"[^\x00-\x7f]+")

    def __init__(self, text: str) -> None:
        self._length = len(text)
        self._fold = [0]
        self._orig = [0]
        if text.isascii():
            self.text = text.lower()
            return
        out: list[str] = []
        last = 0
        grown = 0  # folded length - original length so far
        for m in self._NON_ASCII.finditer(text):
            out.append(text[last:m.start()].lower())
            for k, ch in enumerate(m.group(), m.start()):
                f = _fold_char(ch)
                out.append(f)
                if len(f) != 1:
                    grown += len(f) - 1
                    self._fold.append(k + 1 + grown)
                    self._orig.append(k + 1)
            last = m.end()
        out.append(text[last:].lower())
        self.text = "".join(out)

    def orig(self, pos: int) -> int:
        i = bisect_right(self._fold, pos) - 1
        return min(self._orig[i] + pos - self._fold[i], self._length)


# ---------------------------------------------------------------------------------- known identifiers

_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
_SUBWORD = re.compile(r"[^\W\d_]+")
_RUN = re.compile(r"[^\W_]+")
_NAME_SPLIT = re.compile(r"[\^=,\s.]+")
# Between two parts of one name: "DOE, JOHN", "John Q. Doe", "DOE^JOHN", "de Vries", "O'Brien".
_NAME_GAP = re.compile(r"[ \t]*(?:[,^'’-][ \t]*)?(?:[A-Z]\.?[ \t]+)?")
_INITIAL_BEFORE = re.compile(r"(?<![\w.])([A-Z])(?:\.[ \t]*|[ \t]+)$")
_INITIAL_AFTER = re.compile(r"(?:,[ \t]*|[ \t]+)([A-Z])(?:\.|(?!\w))")
_TITLE_BEFORE = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|Miss)\.?[ \t]+$", re.IGNORECASE)
# Words of addresses and institutions written in full or abbreviated: a known "Maple Avenue" is also
# found as "Maple Ave", "St. Lucia" as "Saint Lucia".
_SAME_WORDS = ("street st", "avenue ave", "road rd", "drive dr", "lane ln", "boulevard blvd", "court ct",
               "terrace ter", "place pl", "parkway pkwy", "circle cir", "highway hwy", "square sq", "suite ste",
               "apartment apt", "centre center", "saint st", "mount mt")
_SPELLINGS: dict[str, frozenset[str]] = {}
for _group in _SAME_WORDS:
    for _word in _group.split():
        _SPELLINGS[_word] = _SPELLINGS.get(_word, frozenset()) | frozenset(_group.split())
_INSTITUTION_WORDS = _words("hospital clinic center centre infirmary health healthcare institute klinikum")


class _Matcher:
    """One patient's identifiers, prepared for matching (cached: a patient has many reports).

    Names are looked up word by word in a dictionary; the one-typo comparison runs only for words whose
    first or last letter and length match a known part of 5+ letters. Other identifiers (IDs, phone
    numbers, addresses, institutions) are compared as "skeletons", their letters and digits without the
    separators, against the text squeezed the same way: "123456" finds "123-456" and back, "(217)
    555-0142" finds "217.555.0142". No regular expression is compiled per patient.
    """

    def __init__(self, exact: dict[str, bool], strings: dict[str, str], short_numbers: frozenset[str]) -> None:
        self.exact = exact  # folded name part -> weak (a common word, a particle, or shorter than MIN_NAME_PART)
        self.fuzzy: dict[tuple[str, int], list[tuple[str, bool]]] = {}
        for part, weak in exact.items():
            if len(part) >= FUZZY_MIN_PART:
                for length in (len(part) - 1, len(part), len(part) + 1):
                    for key in {(part[0], length), (part[-1], length)}:
                        self.fuzzy.setdefault(key, []).append((part, weak))
        self.initials = frozenset(p[0] for p in exact if len(p) >= MIN_NAME_PART)
        self.skeletons = strings  # skeleton -> category
        self.short_numbers = short_numbers  # numeric IDs of 4-5 digits: not when a unit follows

    # -- names ----------------------------------------------------------------------------------------
    def _known_word(self, token: str) -> bool | None:
        """Weak (True) or strong (False) if ``token`` is a known name part, exactly or with one typo."""
        weak = self.exact.get(token)
        if weak is not None:
            return weak
        size = len(token)
        if size < FUZZY_MIN_PART - 1 or token in COMMON_WORDS:
            return None
        for part, part_weak in self.fuzzy.get((token[0], size), []) + self.fuzzy.get((token[-1], size), []):
            if _within_one_edit(token, part):
                return part_weak
        return None

    def names(self, text: str, folded: _Folded) -> list[_Hit]:
        if not self.exact:
            return []
        # Most words of a report are not names: decide once per distinct word, in C where possible.
        words = set(_WORD.findall(folded.text))
        words |= {w[:-2] for w in words if w.endswith("'s")}  # "O'Brien's": the name without the possessive
        candidates: dict[str, bool] = {}
        fuzzy = self.fuzzy
        for word in words:
            if word in self.exact or (fuzzy and ((word[0], len(word)) in fuzzy or (word[-1], len(word)) in fuzzy)) \
                    or "-" in word or "'" in word:
                weak = self._known_word(word)
                if weak is not None:
                    candidates[word] = weak
                elif "-" in word or "'" in word:  # "Garcia-Lopez", "Doe's": each part on its own
                    for sub in _SUBWORD.findall(word):
                        weak = self._known_word(sub)
                        if weak is not None:
                            candidates[sub] = weak
        if not candidates:
            return []
        found: list[tuple[int, int, bool]] = []  # original start, end, weak
        ftext, size = folded.text, len(folded.text)
        for word, weak in candidates.items():
            at = ftext.find(word)
            while at != -1:
                end = at + len(word)
                # A whole word, or a part of "Garcia-Lopez" / "Doe's" (but not "John" in "Johnson").
                if (at == 0 or not ftext[at - 1].isalpha()) and (end == size or not ftext[end].isalpha()):
                    found.append((folded.orig(at), folded.orig(end), weak))
                at = ftext.find(word, end)
        found.sort(key=lambda f: (f[0], -f[1]))
        kept: list[tuple[int, int, bool]] = []
        for item in found:  # "min" inside "min-jun": the longer match stands
            if not kept or item[1] > kept[-1][1]:
                kept.append(item)
        found = kept
        if not found:
            return []

        # The parts of one written name form a group; a group counts if a part of it is strong, if it is
        # written as a name, or if an initial of a known name goes with it ("A. Li"). Initials of the known
        # names next to a group are taken with it.
        groups: list[list[tuple[int, int, bool]]] = [[found[0]]]
        for item in found[1:]:
            if _NAME_GAP.fullmatch(text, groups[-1][-1][1], item[0]) is not None:
                groups[-1].append(item)
            else:
                groups.append([item])
        hits: list[_Hit] = []
        for group in groups:
            start, end = group[0][0], group[-1][1]
            for _ in range(3):
                before = _INITIAL_BEFORE.search(text, max(0, start - 4), start)
                if before is None or before.group(1).lower() not in self.initials:
                    break
                start = before.start()
            for _ in range(3):
                after = _INITIAL_AFTER.match(text, end)
                if after is None or after.group(1).lower() not in self.initials:
                    break
                end = after.end()
            with_initial = (start, end) != (group[0][0], group[-1][1]) and text[group[0][0]].isupper()
            if all(weak for _, _, weak in group) and not with_initial and not _written_as_name(text, group):
                continue
            hits.append((start, end, "name", REPLACEMENTS["name"]))
        return hits

    # -- IDs, phone numbers, addresses, institutions ---------------------------------------------------
    def strings(self, text: str, folded: _Folded) -> list[_Hit]:
        if not self.skeletons:
            return []
        ftext = folded.text
        squeezed = ftext.translate(_SQUEEZE)
        hits: list[_Hit] = []
        for skeleton, category in self.skeletons.items():
            at = squeezed.find(skeleton)
            while at != -1:
                span = _unsqueeze(ftext, squeezed, at, at + len(skeleton))
                if span is not None:
                    o_start, o_end = folded.orig(span[0]), folded.orig(span[1])
                    if skeleton not in self.short_numbers or not _measurement_or_code(text, o_start, o_end):
                        hits.append((o_start, o_end, category, REPLACEMENTS[category]))
                at = squeezed.find(skeleton, at + 1)
        return hits


def _unsqueeze(ftext: str, squeezed: str, start: int, end: int) -> tuple[int, int] | None:
    """The span of ``ftext`` that ``squeezed[start:end]`` came from, if it is bounded as a whole identifier.

    Only the line of the match is walked (line breaks are never squeezed out), so a hit costs a few
    dozen characters whatever the length of the text.
    """
    line = squeezed.count("\n", 0, start)
    f_line = 0
    for _ in range(line):
        f_line = ftext.index("\n", f_line) + 1
    s_pos, f_pos = squeezed.rfind("\n", 0, start) + 1, f_line
    f_start = -1
    while s_pos < end:
        if ftext[f_pos] in _SQUEEZED:
            f_pos += 1
            continue
        if s_pos == start:
            f_start = f_pos
        s_pos += 1
        f_pos += 1
    f_end = f_pos
    if (f_start > 0 and ftext[f_start - 1].isalnum()) or (f_end < len(ftext) and ftext[f_end].isalnum()):
        return None  # inside a longer word or number
    if _LONG_GAP.search(ftext, f_start, f_end):
        return None
    return f_start, f_end


# What may separate the pieces of one identifier written in the text ("0012-3456", "(217) 555-0142",
# "123 Maple Ave."): removed from both sides before comparing, at most three in a row.
_SQUEEZED = frozenset("-./ \t(),#+@_'")
_SQUEEZE = str.maketrans(dict.fromkeys(_SQUEEZED))
_LONG_GAP = re.compile(r"[-./ \t(),#+@_']{4,}")


@lru_cache(maxsize=256)
def _matcher(names: frozenset[str], parts: frozenset[str], ids: frozenset[str], other: frozenset[str],
             institutions: frozenset[str]) -> _Matcher:
    exact: dict[str, bool] = {}

    def add(part: str, weak: bool) -> None:
        folded = _fold(part).strip("'-")
        if not folded or folded in _HONORIFICS or not _SUBWORD.fullmatch(folded.replace("'", "a").replace("-", "a")):
            return
        weak = weak or len(folded) < MIN_NAME_PART or folded in COMMON_WORDS or folded in _PARTICLES
        exact[folded] = exact.get(folded, True) and weak
        if "'" in folded or "-" in folded:  # half of "Min-jun" alone is weak: "72/min" is not a name
            for sub in _SUBWORD.findall(folded):
                add(sub, weak=True)

    for name in names:
        for part in _NAME_SPLIT.split(name):
            add(part, weak=False)
    for part in parts:
        add(part, weak=False)

    strings: dict[str, str] = {}
    short: set[str] = set()

    def put(value: str, category: str, shortest: int = MIN_ID_LENGTH) -> None:
        pieces = _RUN.findall(_fold(value))
        # "Maple Avenue" is also written "Maple Ave" (and back): every spelling of the suffixes.
        spellings = [""]
        for piece in pieces:
            spellings = [s + a for s in spellings for a in _SPELLINGS.get(piece, (piece,))][:16]
        for skeleton in spellings:
            if len(skeleton) < shortest:
                continue
            strings.setdefault(skeleton, category)
            if skeleton.isdigit():
                core = skeleton.lstrip("0")
                if core != skeleton and len(core) >= MIN_ID_LENGTH:
                    strings.setdefault(core, category)  # leading zeros are often dropped ("00123456" -> "123456")
                if len(core) < 6:
                    short.update((core, skeleton))
                if category == "phone" and len(skeleton) == 11 and skeleton[0] == "1":
                    strings.setdefault(skeleton[1:], category)

    for value in ids:
        put(value, "id")
    for value in other:
        put(value, _other_category(value))
    for value in institutions:
        put(value, "institution", MIN_NAME_PART)  # "RMC"
    return _Matcher(exact, strings, frozenset(short))


def _other_category(value: str) -> str:
    """What a known address, phone, e-mail, institution or postal code is (KnownIdentifiers.other)."""
    text = value.strip()
    digits = sum(c.isdigit() for c in text)
    if "@" in text:
        return "email"
    if digits >= 7 and re.fullmatch(r"[\d\s().+/-]+(?:\s*(?:x|ext\.?)\s*\d+)?", text, re.IGNORECASE):
        return "phone"
    if re.fullmatch(r"\d{4,6}(?:-\d{4})?|[A-Za-z]\d[A-Za-z] ?\d[A-Za-z]\d", text):
        return "zip"
    words = set(_RUN.findall(_fold(text)))
    return "institution" if words & _INSTITUTION_WORDS else "address"


def _measurement_or_code(text: str, start: int, end: int) -> bool:
    """A short number that is a measurement ("1000 mg"), part of a decimal, or a code in parentheses."""
    return (text[start - 1:start] in (".", ",") or text[end:end + 2] in (".0", ".1", ".2", ".3", ".4", ".5", ".6",
                                                                           ".7", ".8", ".9")
            or _UNIT_AFTER.match(text, end) is not None or _CODE_BEFORE.search(text, max(0, start - 16), start)
            is not None or (text[start - 1:start] == "(" and text[end:end + 1] == ")"))


def _written_as_name(text: str, group: list[tuple[int, int, bool]]) -> bool:
    """Weak parts count where they are written as a name: "Young", not "a young man"; "mark park" (two parts
    of the name in a row); never "Li" or "de" alone.

    A capitalised common word is taken even at the start of a sentence ("White matter ..." for a patient
    called White): it is this patient's name, and removing a word too many is the safe error.
    """
    start = group[0][0]
    if any(e - s < MIN_NAME_PART for s, e, _ in group):
        return False
    if len({text[s:e].lower() for s, e, _ in group}) >= 2:
        return True  # two known parts in a row, "mark park": the name itself, even in lower case
    return text[start].isupper() or _TITLE_BEFORE.search(text, max(0, start - 8), start) is not None


def _within_one_edit(a: str, b: str) -> bool:
    """Optimal string alignment distance <= 1: one substitution, insertion, deletion or swap of neighbours."""
    if a == b:
        return True
    if len(a) > len(b):
        a, b = b, a
    la, lb = len(a), len(b)
    if lb - la > 1:
        return False
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la == lb:
        if a[i + 1:] == b[i + 1:]:
            return True
        return i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2:] == b[i + 2:]
    return a[i:] == b[i + 1:]


def _known_compact_dates(text: str, dates: AbstractSet[dt.date]) -> Iterator[_Hit]:
    """A known date written ``YYYYMMDD`` inside a longer token ("DOB19610305", "ID-19610305-7")."""
    if not any(c.isdigit() for c in text):
        return
    for date in dates:
        compact = date.strftime("%Y%m%d")
        start = text.find(compact)
        while start != -1:
            yield start, start + 8, "date", REPLACEMENTS["date"]
            start = text.find(compact, start + 8)


# ---------------------------------------------------------------------------------------------- patterns
#
# The places where a pattern can start (a number, a month name, a title, a label...) are found first, in
# C (a regex for numbers, set intersection and str.find for the trigger words), and each family's regex is
# then matched only there. Python's regex engine would otherwise try every alternative of every pattern at
# every character.

_TOKEN = re.compile(r"\w+")

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"""(?ix)
    \b(?:(?:https?|ftp)://|www\.)[^\s<>"'()\[\]{}]+
  | \b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|info|io|health|de|fr|uk|nl|ca|au)
    (?:/[^\s<>"'()\[\]{}]*)?(?![\w@-])""")
_URL_HINTS = ("://", "www.", ".com", ".org", ".net", ".edu", ".gov", ".info", ".io", ".health", ".de", ".fr", ".uk",
              ".nl", ".ca", ".au")
_PHONE = re.compile(r"""(?x)
    (?<![\w+/.-])
    (?:
        \+[1-9]\d{0,2}(?:[\s.-]*\(\d{1,5}\)[\s.-]*\d{1,8}|[\s.-]\d{1,8}){1,6}  # +44 (0)20 7946 0958
      | 00[1-9]\d{0,2}(?:[\s.-]*\(\d{1,5}\)[\s.-]*\d{1,8}|[\s.-]\d{1,8}){2,6}  # 0049 89 4140 0
      | \+[1-9]\d{7,14}                                                    # +493012345678
      | (?:\+?1[\s.-]?)?(?:\(\d{3}\)[\s.-]?|\d{3}[\s.-])\d{3}[\s.-]\d{4}    # (217) 555-0142, 217-555-0142
    )
    (?:\s*(?:[xX]|[eE]xt\.?|[eE]xtension)\s*\d{1,6})?
    (?![\w-]|\.\d)""")
# A local number or extension after a word that says it is one: "tel. 555-0147", "pager 4521".
_PHONE_IN_CONTEXT = re.compile(r"""(?xi)
    (?:tel(?:ephone)?|phone|ph|pager|beeper|fax|mobile|cell|ext(?:ension)?|call\s+back(?:\s+at)?|
       contact\s+number)\b\.?\s*(?:[:#]|no\.?)?\s*
    (?P<number>\+?\(?\d[\d\s().-]{2,}\d)""")
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_LABELLED_ID = re.compile(r"""(?x)
    (?:
        (?i:(?:mrn|medical\s+record(?:\s+(?:number|no))?|accession(?:\s+(?:number|no))?|acc|patient\s+id|pid|
            ssn|social\s+security(?:\s+(?:number|no))?|study\s+id|member\s+id|subscriber\s+id|nhs\s+(?:number|no)|
            insurance\s+id)\b\.?|mr\s*\#)
      | ID\b
      | (?i:(?:order|account|acct|encounter|visit|specimen|case|requisition|insurance|policy|serial|licen[cs]e|
            health\s+plan|claim|device)\s*(?:\#|no\b\.?|number\b|id\b|:))
    )
    \s*(?:\#|(?i:no\b\.?|number\b))?\s*[:#=]?\s*
    (?P<value>(?=[\w/-]*\d)[A-Za-z0-9][\w/-]{1,40})""")
_DIGIT_RUN = re.compile(r"(?<![\w.,/+^-])\d(?:-?\d){5,}(?![\w-]|[.,/]\d)")
_ALNUM_ID = re.compile(r"\b(?<!-)[A-Z]{1,4}-?\d{5,}(?![\w-]|\.\d)")
_DICOM_UID = re.compile(r"(?<![\w.])[12](?:\.\d+){4,}(?![\w.])")

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
          r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_MONTH_NUMBERS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                              "nov", "dec"), 1)}
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                "November", "December")
_DATE = re.compile(rf"""(?xi)
    (?P<dmy>(?<![\w.])(?P<a_d>\d{{1,2}})(?P<a_sfx>st|nd|rd|th)?(?:\s+of)?(?:\s+|-|(?=[a-z]))
        (?P<a_mon>{_MONTH})\.?(?:,?\s+|-|(?=\d))(?P<a_y>\d{{4}}|\d{{2}}(?=[\s,.;:)]|$))(?!\d))
  | (?P<mdy>(?P<b_mon>{_MONTH})\.?[\s-]+(?P<b_d>\d{{1,2}})(?P<b_sfx>st|nd|rd|th)?(?:,\s*|\s+)(?P<b_y>\d{{4}})(?!\d))
  | (?P<ymd>(?<![\w.])(?P<c_y>1[89]\d\d|20\d\d)(?P<c_s>[-/.])(?P<c_m>\d{{1,2}})(?P=c_s)(?P<c_d>\d{{1,2}})(?![\d]))
  | (?P<num>(?<![\w./-])(?P<d_a>\d{{1,2}})(?P<d_s>[/.-])(?P<d_b>\d{{1,2}})(?P=d_s)(?P<d_y>\d{{4}}|\d{{2}})
        (?![\w/]|[.-]\d))
  | (?P<da>(?<![\w.,-])(?P<e_y>1[89]\d\d|20\d\d)(?P<e_m>0[1-9]|1[0-2])(?P<e_d>0[1-9]|[12]\d|3[01])
        (?:[01]\d|2[0-3])?(?:[0-5]\d){{0,2}}(?:\.\d{{1,6}})?(?![\w]|[.,]\d))
  | (?P<my>(?P<f_mon>{_MONTH})\.?,?\s+(?P<f_y>1[89]\d\d|20\d\d)(?!\d))
  | (?P<my_num>(?<![\w./-])(?P<g_m>0?[1-9]|1[0-2])/(?P<g_y>1[89]\d\d|20\d\d)(?![\w/]))
  | (?P<dm>(?<![\w.])(?P<h_d>\d{{1,2}})(?P<h_sfx>st|nd|rd|th)?(?:\s+of)?\s+(?P<h_mon>{_MONTH})\b\.?)
  | (?P<md>(?P<i_mon>{_MONTH})\.?\s+(?P<i_d>\d{{1,2}})(?P<i_sfx>st|nd|rd|th)?(?![\w:.,]\d|\s*{_UNITS}\b|\d))
""")
_DATE_KINDS = ("dmy", "mdy", "ymd", "num", "da", "my", "my_num", "dm", "md")

_AGE_NUMBER = re.compile(r"""(?x)
    (?<![\w.])(9\d|1[0-2]\d)(?=[\s-]*(?i:years?|yrs?|y)[\s-]*(?i:old|of\s+age)\b|\s*(?i:yo|y/o|y\.o\.)(?!\w))""")
_AGE_WORD = re.compile(r"(?i:aged?|age\s*:)\s*(9\d|1[0-2]\d)(?![\w.]|\s*(?:mm|cm|%))")

_STATES = frozenset("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM "
                    "NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR".split())
_STREET = re.compile(r"""(?x)
    (?<![\w.,-])\d{1,6}[A-Za-z]?(?:-\d{1,4})?[ \t]+
    (?:(?:[NSEW]\.?|North|South|East|West)[ \t]+)?
    (?:(?:\d{1,3}(?:st|nd|rd|th)|[A-Z][\w'’.-]*)[ \t]+){1,4}?
    (?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Parkway|Pkwy|
       Circle|Cir|Highway|Hwy|Square|Sq|Trail|Trl|Alley|Row|Plaza|Close|Crescent|
       STREET|ST|AVENUE|AVE|ROAD|RD|BOULEVARD|BLVD|LANE|LN|DRIVE|DR|COURT|CT|WAY|PLACE|TERRACE|PARKWAY|HIGHWAY)
    \b\.?
    (?:,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl|\#)\.?[ \t]*\#?[ \t]*[\w-]{1,6}\b)?""")
_PO_BOX = re.compile(r"(?i:p\.?\s?o\.?\s*box)\s+\d{1,6}\b")
# "IL 62704" after "Springfield, ": the city and the ZIP code go, the state stays (HIPAA keeps states).
_STATE_ZIP = re.compile(r"\b(?P<state>[A-Z]{2})[ \t]+(?P<zip>\d{5}(?:-\d{4})?)(?![\w-])")
_CITY_BEFORE = re.compile(r"(?<![\w-])([A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2}),[ \t]*$")
_LABELLED_ZIP = re.compile(r"(?i:zip(?:\s*code)?|postal\s*code|post\s*code)\s*[:#]?\s*"
                           r"(\d{5}(?:-\d{4})?|[A-Z]\d[A-Z]\s?\d[A-Z]\d)\b")

_INSTITUTION_SUFFIXES = ("University Hospital", "Children's Hospital", "Hospital", "Clinic", "Medical Center",
                         "Medical Centre", "Health System", "Health Center", "Health Centre", "Imaging Center",
                         "Imaging Centre", "Cancer Center", "Cancer Centre", "Infirmary", "Healthcare", "Health Care",
                         "Medical Group", "Polyclinic", "Sanatorium", "Klinikum")
# Title case or upper case only: "Memory clinic" is a department, "RADIOLOGY REPORT" a heading.
_INSTITUTION_SUFFIX = re.compile("(?:" + "|".join(
    r"[ \t]+".join(re.escape(w) for w in s.split()) for s in sorted(
        {*_INSTITUTION_SUFFIXES, *(x.upper() for x in _INSTITUTION_SUFFIXES)}, key=len, reverse=True))
    + r")s?\b(?P<tail>[ \t]+(?:of|for|OF|FOR)[ \t]+(?:the[ \t]+)?(?:[A-Z][\w'’.-]*(?:[ \t]|(?=[\s,.;:)]|$))"
      r"(?:(?:of|for|and)[ \t]+)?){1,4})?")
_INSTITUTION_WORDS_BEFORE = re.compile(
    r"(?<![\w'’&.-])(?:(?:St\.|Saint|Mount|Mt\.|[A-Z][\w'’&.-]*)[ \t]+(?:(?:of|for|and|the|&)[ \t]+)?){1,5}$")
_INSTITUTION_LABEL = re.compile(r"(?i:institution|facility|hospital|referring\s+(?:institution|hospital|facility)|"
                                r"outside\s+(?:institution|hospital|facility))[ \t]*:[ \t]*"
                                r"(?P<value>[^\n,;]{3,80}?)[ \t]*(?=[\n,;]|$)")
# Leading words the institution pattern takes with the name but that are not part of it.
_NOT_INSTITUTION = _STOP | _words("""outside prior previous compared comparison referred transferred obtained done
                                     performed images study exam report from our their at""")

# Titles and labels after which a person's name follows. "MR"/"MS" are modalities and diseases:
# upper case counts as a title only with a period.
_TITLE = re.compile(r"""(?x)
    (?P<title>(?:Dr|DR|dr|Mr|Mrs|MRS|Ms|Mx|Prof|PROF|Doctor|DOCTOR|Miss|MISS)\b\.?|(?:MR|MS)\.(?=[ \t]))
  | (?P<patient>(?i:patient(?:'s)?(?:[ \t]+(?:full[ \t]+)?name)?|pt(?:[ \t]+name)?|name)[ \t]*:)
  | (?P<label>(?i:(?:referring(?:[ \t]+(?:physician|provider|doctor|clinician))?|ordering(?:[ \t]+(?:physician|provider))?|
        requesting(?:[ \t]+(?:physician|provider))?|attending(?:[ \t]+physician)?|(?:reading[ \t]+)?radiologist|
        technologist|tech|physician|provider|pcp|cc|copy[ \t]+to|emergency[ \t]+contact|contact|next[ \t]+of[ \t]+kin|
        guarantor|interpreting[ \t]+physician|resident|fellow|performing[ \t]+physician|operator|surgeon|nurse|
        transcriptionist|scribe)[ \t]*:)
      | (?i:(?:referred|dictated|signed|read|reviewed|verified|transcribed|interpreted|reported|performed|requested|
        approved|authenticated|ordered|seen|examined|attested|co-?signed)[ \t]+by\b[ \t]*:?)
      | (?i:(?:discussed[ \t]+with|communicated[ \t]+to|called[ \t]+to|spoke[ \t]+with|conveyed[ \t]+to|relayed[ \t]+to|
        notified|d/w)\b[ \t]*:?))""")
_NAME_TOKEN = re.compile(r"[ \t]*(?P<tok>[^\W\d_](?:\.|[\w'’-]*))")
_NAME_SEPARATOR = re.compile(r"[ \t]*(?:,|\^+)?[ \t]*")
_NAME_END = re.compile(r"[ \t]*(?:$|[\n,.;:()]|(?P<word>\w+))")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)
_AFTER_EPONYM = re.compile(r"(?:['’]s)?[ \t]+(?:" + "|".join(_EPONYM_FOLLOWERS) + r")\b", re.IGNORECASE)
_INITIAL_ALONE = re.compile(r"[A-Z]\.?")
_DEGREES = _words("md do phd rn rt facr frcr frcpc mbbs mph msc np pa dds mba jd pharmd cnp crna")

# Which words start which pattern family.
_T_TITLE, _T_ID, _T_PHONE, _T_AGE, _T_ZIP, _T_INSTITUTION, _T_INSTITUTION_LABEL, _T_MONTH = (1 << i for i in range(8))
_TRIGGERS: dict[str, int] = {}
for _bit, _list in (
    (_T_TITLE, """dr mr mrs ms mx prof doctor miss patient pt name referring ordering requesting attending reading
                  radiologist technologist tech physician provider pcp cc copy emergency contact next guarantor
                  interpreting resident fellow performing operator surgeon nurse transcriptionist scribe referred
                  dictated signed read reviewed verified transcribed interpreted reported performed requested approved
                  authenticated ordered seen examined attested discussed communicated called spoke conveyed relayed
                  notified"""),
    (_T_ID, """mrn medical accession acc patient pid ssn social study member subscriber nhs insurance mr id order account
               acct encounter visit specimen case requisition policy serial license licence health claim device"""),
    (_T_PHONE, "tel telephone phone ph pager beeper fax mobile cell ext extension call contact"),
    (_T_AGE, "age aged"),
    (_T_ZIP, "zip postal post"),
    (_T_INSTITUTION, "university children hospital clinic medical health imaging cancer infirmary healthcare polyclinic "
                     "sanatorium klinikum"),
    (_T_INSTITUTION_LABEL, "institution facility hospital referring outside"),
    (_T_MONTH, "jan january feb february mar march apr april may jun june jul july aug august sep sept september oct "
               "october nov november dec december"),
):
    for _word in _list.split():
        _TRIGGERS[_word] = _TRIGGERS.get(_word, 0) | _bit
_TRIGGER_WORDS = frozenset(_TRIGGERS)
_NUMBER = re.compile(r"\b\d+")
_MONTH_PREFIXES = frozenset(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))
_ORDINALS = ("st", "nd", "rd", "th")


def _pattern_hits(text: str, shift: Callable[[dt.date], dt.date] | None,
                  known_dates: AbstractSet[dt.date]) -> list[_Hit]:
    """All pattern findings: candidates first (numbers and trigger words, in text order), then the regex
    of each family that can start there."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters lower-case to two ("İ"): keep the offsets
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    starts: list[tuple[int, int, int]] = [(m.start(), 0, m.end()) for m in _NUMBER.finditer(text)]
    size = len(lowered)
    for word in _TRIGGER_WORDS.intersection(_TOKEN.findall(lowered)):
        flags, length = _TRIGGERS[word], len(word)
        at = lowered.find(word)
        while at != -1:
            end = at + length
            if (at == 0 or not (lowered[at - 1].isalnum() or lowered[at - 1] == "_")) and (
                    end == size or not (lowered[end].isalnum() or lowered[end] == "_")):
                starts.append((at, flags, end))
            at = lowered.find(word, end)
    if "d/w" in lowered:  # "d/w Dr. Smith": discussed with
        starts.extend((m.start(), _T_TITLE, m.end()) for m in re.finditer("d/w", lowered))
    starts.sort()

    hits: list[_Hit] = []
    ends: dict[str, int] = {}  # per family, where its last match ended: matches of a family do not overlap

    def at_(pattern: re.Pattern[str], pos: int, family: str) -> re.Match[str] | None:
        if pos < ends.get(family, 0):
            return None
        m = pattern.match(text, pos)
        if m is not None:
            ends[family] = m.end()
        return m

    def hit(start: int, end: int, category: str, replacement: str | None = None) -> None:
        hits.append((start, end, category, replacement or REPLACEMENTS[category]))

    for pos, flags, end in starts:
        if not flags:
            _number_at(text, pos, end, at_, hit, shift, known_dates)
            continue
        if flags & _T_TITLE:
            span = _titled_name_at(text, pos)
            if span is not None:
                hit(span[0], span[1], "name")
        if flags & _T_ID and (m := at_(_LABELLED_ID, pos, "id-label")):
            value_end = m.end("value")
            while value_end > m.start("value") and text[value_end - 1] in "-/_":
                value_end -= 1
            hit(m.start("value"), value_end, "id")
        if flags & _T_PHONE and (m := at_(_PHONE_IN_CONTEXT, pos, "phone-context")):
            number = m.group("number").rstrip(" ).-")
            end = m.start("number") + len(number)
            if sum(c.isdigit() for c in number) >= 4 and not _UNIT_AFTER.match(text, end):
                hit(m.start("number"), end, "phone")
        if flags & _T_AGE and (m := at_(_AGE_WORD, pos, "age")):
            hit(m.start(1), m.end(1), "age")
        if flags & _T_ZIP and (m := at_(_LABELLED_ZIP, pos, "zip")):
            hit(m.start(1), m.end(1), "zip")
        if flags & _T_INSTITUTION and text[pos].isupper():
            span = _institution_at(text, pos)
            if span is not None:
                hit(span[0], span[1], "institution")
        if flags & _T_INSTITUTION_LABEL and not text[text.rfind("\n", 0, pos) + 1:pos].strip() \
                and (m := at_(_INSTITUTION_LABEL, pos, "institution-label")):
            hit(m.start("value"), m.end("value"), "institution")
        if flags & _T_MONTH and (m := at_(_DATE, pos, "date")):
            _date_hit(text, m, shift, known_dates, hit)

    for m in _STATE_ZIP.finditer(text):
        if m.group("state") in _STATES:
            hit(m.start("zip"), m.end("zip"), "zip")
            city = _CITY_BEFORE.search(text, max(0, m.start() - 40), m.start())
            if city is not None and city.group(1).lower() not in COMMON_WORDS:
                hit(city.start(1), city.end(1), "address")
    for m in _ALNUM_ID.finditer(text):
        if not _CODE_BEFORE.search(text, max(0, m.start() - 16), m.start()):
            hit(m.start(), m.end(), "id")
    if "box" in lowered:
        for m in _PO_BOX.finditer(text):
            hit(m.start(), m.end(), "address")
    if "@" in text:
        for m in _EMAIL.finditer(text):
            hit(m.start(), m.end(), "email")
    if any(h in lowered for h in _URL_HINTS):
        for m in _URL.finditer(text):
            end = m.end()
            while end > m.start() and text[end - 1] in ".,;:!?":
                end -= 1
            hit(m.start(), end, "url")
    return hits


_AtFunction = Callable[[re.Pattern[str], int, str], "re.Match[str] | None"]
_HitFunction = Callable[..., None]


def _number_at(text: str, pos: int, end: int, at: _AtFunction, hit: _HitFunction,
               shift: Callable[[dt.date], dt.date] | None, known_dates: AbstractSet[dt.date]) -> None:
    """Everything that can start with the number at ``pos``: dates, ages, phones, IDs, street addresses.

    Cheap looks at the characters around decide which regexes are worth trying. Long numbers are
    identifiers unless they are clearly something else: codes ("(399068003)" after a diagnosis, a number
    after "SNOMED", "LOINC", "ICD-10", "code"), measurements ("100000 cells") and DICOM DA/DT values
    (dates, handled with the dates so that they can be shifted).
    """
    digits = end - pos
    after = text[end:end + 1]
    before = text[pos - 1:pos] if pos else ""
    rest = text[end:end + 2].lower()
    if digits <= 2:
        nxt = text[end + 1:end + 4].lower() if after in (" ", "\t") else ""
        if (after in ("/", ".", "-") or rest in _ORDINALS or rest[:1].isalpha() and rest[:1] != "y"
                or nxt in _MONTH_PREFIXES or nxt == "of "):
            if (m := at(_DATE, pos, "date")) is not None:
                _date_hit(text, m, shift, known_dates, hit)
    elif (digits == 4 and after in ("-", "/", ".")) or digits >= 8:
        if (m := at(_DATE, pos, "date")) is not None:
            _date_hit(text, m, shift, known_dates, hit)
    if digits in (2, 3) and text[pos] in "19" and (m := at(_AGE_NUMBER, pos, "age")):
        hit(m.start(1), m.end(1), "age")
    if before in ("+", "(") or (digits == 3 and after in ("-", ".", " ")) or text.startswith("00", pos) or (
            digits == 1 and text[pos] == "1" and after in ("-", ".", " ")):
        start = pos - 1 if before in ("+", "(") else pos
        if (m := at(_PHONE, start, "phone")) is not None and 7 <= sum(c.isdigit() for c in m.group()) <= 20:
            hit(m.start(), m.end(), "phone")
    if digits == 3 and after == "-" and (m := at(_SSN, pos, "ssn")):
        hit(m.start(), m.end(), "id")
    if (digits >= 6 or after == "-") and (m := at(_DIGIT_RUN, pos, "digits")):
        start, stop = m.span()
        if not ((text[start - 1:start] == "(" and text[stop:stop + 1] == ")")
                or _CODE_BEFORE.search(text, max(0, start - 16), start) or _UNIT_AFTER.match(text, stop)
                or _DATE.fullmatch(text, start, stop)):
            hit(start, stop, "id")
    if digits <= 6 and after in (" ", "\t") and (text[end + 1:end + 2].isupper() or text[end + 1:end + 2].isdigit()) \
            and (m := at(_STREET, pos, "street")):
        hit(m.start(), m.end(), "address")
    if digits == 1 and text[pos] in "12" and after == "." and (m := at(_DICOM_UID, pos, "uid")):
        hit(m.start(), m.end(), "id")


def _date_hit(text: str, m: re.Match[str], shift: Callable[[dt.date], dt.date] | None,
              known_dates: AbstractSet[dt.date], hit: _HitFunction) -> None:
    kind = next(k for k in _DATE_KINDS if m.group(k))
    parsed = _parse_date(m, kind, known_dates)
    if parsed is None:
        return
    date, fields = parsed
    if kind in ("my", "dm", "md"):
        month = m.group({"my": "f_mon", "dm": "h_mon", "md": "i_mon"}[kind])
        if not month[0].isupper():
            return  # "may 2024", "march 5": read as words unless capitalised
    start, end = m.span(kind)
    if kind in ("dm", "md", "my") and text[end - 1:end] == ".":
        end -= 1  # the period closes the sentence
    if kind == "da":
        end = start + 8  # a DT keeps its time of day
    replacement = REPLACEMENTS["date"]
    if shift is not None:
        try:
            replacement = _render(text, start, end, fields, shift(date))
        except (OverflowError, ValueError):
            replacement = REPLACEMENTS["date"]
    hit(start, end, "date", replacement)


def _institution_at(text: str, pos: int) -> tuple[int, int] | None:
    """"Riverside Medical Center" found from its last words, then back over the capitalised words before."""
    suffix = _INSTITUTION_SUFFIX.match(text, pos)
    if suffix is None:
        return None
    end = suffix.end()
    while text[end - 1] in " \t":
        end -= 1
    words = _INSTITUTION_WORDS_BEFORE.search(text, max(0, pos - 120), pos)
    if words is None:  # "Hospital of the University of Pennsylvania"
        return (pos, end) if suffix.group("tail") else None
    start = words.start()
    for word in re.finditer(r"\S+", words.group()):
        if normalize(word.group()).rstrip(".,") in _NOT_INSTITUTION:
            start = words.start() + word.end()
        else:
            break
    while start < pos and text[start] in " \t":
        start += 1
    return (start, end) if start < pos or suffix.group("tail") else None


def _titled_name_at(text: str, pos: int) -> tuple[int, int] | None:
    """A name after a title ("Dr. Maria Lopez") or a label ("signed by", "Patient:", "Technologist:")."""
    m = _TITLE.match(text, pos)
    if m is None:
        return None
    kind = "title" if m.group("title") else "patient" if m.group("patient") else "label"
    if kind == "patient" and text[text.rfind("\n", 0, pos) + 1:pos].strip():
        return None  # "Patient:" and "Name:" only as the label of a line
    strict = kind == "title" and m.group()[:2] in ("MR", "MS")  # "MR." / "MS.": only an unusual word follows
    end = m.end()
    if kind != "title":  # "Referring physician: Dr. Gregory House"
        while end < len(text) and text[end] in " \t":
            end += 1
        title = _TITLE.match(text, end)
        if title is not None and title.group("title"):
            end, kind = title.end(), "title"
    return _name_after(text, end, lowercase_ok=kind in ("title", "patient"), strict=strict,
                       after_title=kind == "title", comma_ok=kind == "patient")


def _name_after(text: str, pos: int, *, lowercase_ok: bool, strict: bool, after_title: bool,
                comma_ok: bool) -> tuple[int, int] | None:
    """The span of the person name starting at ``pos``, or None.

    Up to five words: capitalised words, initials, particles ("de", "van"); lower-case words only after a
    title or "Patient:" and not when they are ordinary words; one comma after the first word for the
    "DOE, JOHN" form. It ends at a stop word ("on", "MRN", "MD"), a line end or other punctuation.
    Right after "Dr." or "Mr." a person follows, so an eponym or an ordinary word is taken there ("Dr.
    Parkinson", "dr. mark ..."), but not after a label ("Patient: Parkinson's disease").
    """
    start = end = good_end = -1
    count = words = 0  # tokens, and tokens that are not particles
    while count < 5:
        m = _NAME_TOKEN.match(text, pos)
        if m is None:
            break
        token = m.group("tok")
        word = _POSSESSIVE.sub("", token.rstrip("."))
        if not word:
            break
        key = normalize(word)
        initial = len(word) == 1 and word.isupper()
        particle = False
        if initial:
            pass
        elif key in _STOP or key in _DEGREES:
            break
        elif key in _PARTICLES:
            particle = True
        elif not word[0].isupper():
            if not lowercase_ok:
                break
            if key in COMMON_WORDS and (count or not after_title):
                # "dr. gregory house" ends the line; "dr. smith house calls" does not.
                after = _NAME_END.match(text, m.start("tok") + len(token))
                if count != 1 or after is None or (after.group("word") and after.group("word").lower() not in _STOP):
                    break
        elif strict and key in COMMON_WORDS:
            break
        if _AFTER_EPONYM.match(text, m.start("tok") + len(word)) or (not after_title and key in EPONYMS):
            break
        if start < 0:
            start = m.start("tok")
            comma_ok = comma_ok or (word.isupper() and not initial)
        end = m.start("tok") + (len(token) if initial else len(word))
        if not particle:
            good_end = end
            words += 1
        count += 1
        if len(word) != len(token.rstrip(".")):  # a possessive ends the name
            break
        sep = _NAME_SEPARATOR.match(text, end)
        if sep is None:
            break
        if "," in sep.group():
            if words != 1 or not comma_ok:
                break
        if sep.end() == end and not text.startswith(".", end - 1):
            break
        pos = sep.end()
    if start < 0 or good_end <= start:
        return None
    if _INITIAL_ALONE.fullmatch(text, start, good_end):
        return None  # an initial alone is not a name worth a token
    return start, good_end


# field ("d", "m", "y", "mon" for a month name, "sfx" for an ordinal suffix) -> its span in the text
_Fields = dict[str, tuple[int, int]]
_FULL_MONTHS = frozenset(m.lower() for m in ("January", "February", "March", "April", "May", "June", "July",
                                             "August", "September", "October", "November", "December"))


def _parse_date(m: re.Match[str], kind: str, known_dates: AbstractSet[dt.date]) -> tuple[dt.date, _Fields] | None:
    def span(group: str, _style: str) -> tuple[int, int]:
        return m.start(group), m.end(group)

    def month_of(group: str) -> int:
        return _MONTH_NUMBERS[m.group(group)[:3].lower()]

    def year(group: str) -> int:
        value = m.group(group)
        number = int(value)
        if len(value) == 2:  # a two-digit year: this century up to 49, then the last one
            number += 2000 if number < 50 else 1900
        return number

    fields: _Fields = {}
    try:
        if kind == "dmy":
            y, mo, d = year("a_y"), month_of("a_mon"), int(m.group("a_d"))
            fields = {"d": span("a_d", "d"), "mon": span("a_mon", "mon"), "y": span("a_y", "y")}
            if m.group("a_sfx"):
                fields["sfx"] = span("a_sfx", "sfx")
        elif kind == "mdy":
            y, mo, d = year("b_y"), month_of("b_mon"), int(m.group("b_d"))
            fields = {"d": span("b_d", "d"), "mon": span("b_mon", "mon"), "y": span("b_y", "y")}
            if m.group("b_sfx"):
                fields["sfx"] = span("b_sfx", "sfx")
        elif kind == "ymd":
            y, mo, d = int(m.group("c_y")), int(m.group("c_m")), int(m.group("c_d"))
            fields = {"d": span("c_d", "d"), "m": span("c_m", "m"), "y": span("c_y", "y")}
        elif kind == "num":
            a, b, sep = int(m.group("d_a")), int(m.group("d_b")), m.group("d_s")
            y = year("d_y")
            if len(m.group("d_y")) == 2 and sep != "/" and (len(m.group("d_a")) < 2 or len(m.group("d_b")) < 2):
                return None  # "3-6-12 months", "1.2.24" (a version): too weak to be a date
            # "." is day.month.year (European); "/" and "-" are month/day/year (US) unless the first part
            # cannot be a month, or a known date of the patient says otherwise.
            day_first = sep == "." or a > 12
            if not day_first and b <= 12 and a != b and _valid(y, a, b) and _valid(y, b, a):
                day_first = dt.date(y, b, a) in known_dates and dt.date(y, a, b) not in known_dates
            d, mo = (a, b) if day_first else (b, a)
            fields = {"d": span("d_a" if day_first else "d_b", "d"), "m": span("d_b" if day_first else "d_a", "m"),
                      "y": span("d_y", "y")}
        elif kind == "da":
            y, mo, d = int(m.group("e_y")), int(m.group("e_m")), int(m.group("e_d"))
            fields = {"d": span("e_d", "d"), "m": span("e_m", "m"), "y": span("e_y", "y")}
        elif kind == "my":
            y, mo, d = int(m.group("f_y")), month_of("f_mon"), 15
            fields = {"mon": span("f_mon", "mon"), "y": span("f_y", "y")}
        elif kind == "my_num":
            y, mo, d = int(m.group("g_y")), int(m.group("g_m")), 15
            fields = {"m": span("g_m", "m"), "y": span("g_y", "y")}
        else:  # day and month without a year: shifted within a leap year so that 29 February exists
            group = "h" if kind == "dm" else "i"
            y, mo, d = 2000, month_of(f"{group}_mon"), int(m.group(f"{group}_d"))
            fields = {"d": span(f"{group}_d", "d"), "mon": span(f"{group}_mon", "mon")}
            if m.group(f"{group}_sfx"):
                fields["sfx"] = span(f"{group}_sfx", "sfx")
        return dt.date(y, mo, d), fields
    except ValueError:
        return None


def _valid(y: int, mo: int, d: int) -> bool:
    try:
        dt.date(y, mo, d)
    except ValueError:
        return False
    return True


def _render(text: str, start: int, end: int, fields: _Fields, date: dt.date) -> str:
    """``text[start:end]`` with its day, month and year fields rewritten for ``date``, in the same style.

    Zero padding, two- or four-digit years, full or abbreviated month names, their case and the ordinal
    suffix follow the original; separators and everything else are kept as written.
    """
    # Zero padding: "03/05/2024" and "11/25/2024" pad, "3/15/24" does not; a day alone ("05 March") pads
    # only if it was padded.
    numeric = [text[s:e] for name, (s, e) in fields.items() if name in ("d", "m")]
    pad = all(len(n) == 2 for n in numeric) if len(numeric) == 2 else bool(numeric) and numeric[0].startswith("0")
    pieces: list[tuple[int, int, str]] = []
    for name, (s, e) in fields.items():
        original = text[s:e]
        if name in ("d", "m"):
            number = date.day if name == "d" else date.month
            value = f"{number:02d}" if pad else str(number)
        elif name == "y":
            value = f"{date.year % 100:02d}" if len(original) == 2 else f"{date.year:04d}"
        elif name == "mon":
            full = _MONTH_NAMES[date.month - 1]
            lowered = original.lower()
            if lowered == "sept":
                value = "Sept" if date.month == 9 else full[:3]
            elif lowered == "may" or (len(original) > 3 and lowered in _FULL_MONTHS):
                value = full
            else:
                value = full[:3]
            if original.isupper():
                value = value.upper()
            elif original.islower():
                value = value.lower()
        else:  # the ordinal suffix follows the day
            suffix = "th" if 10 <= date.day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(date.day % 10, "th")
            value = suffix.upper() if original.isupper() else suffix
        pieces.append((s, e, value))
    pieces.sort()
    out, last = [], start
    for s, e, value in pieces:
        out.append(text[last:s])
        out.append(value)
        last = e
    out.append(text[last:end])
    return "".join(out)


__all__ = ["CATEGORIES", "COMMON_WORDS", "EPONYMS", "REPLACEMENTS", "Finding", "ScrubResult", "scrub_text"]
