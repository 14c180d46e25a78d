"""Labelled synthetic radiology reports: the ground truth that measures the free-text scrubber.

Each report comes with the character span and category of every identifier written into it, and with
what the patient's record knows about the patient (:class:`~imagebank.deid.identifiers.KnownIdentifiers`
collected from a FHIR Patient resource, plus the accession number and study date a DICOM header would
add). Recall and precision of :func:`imagebank.deid.text.scrub_text` are measured against these spans.

The texts mix what a scrubber meets in practice, on purpose from both sides:

- identifiers findable **only through the record**: a bare surname or given name in a sentence, the
  name with a typo, in lower case or without its accents, the MRN with other separators, the patient's
  city on its own;
- identifiers findable **only through patterns**: the referring physician and the radiologist after
  "Dr." or "signed by", relatives after a title, other hospitals with their phone numbers, addresses,
  e-mails and URLs, dates of priors, long unlabelled numbers, ages over 89;
- clinical content that must survive: measurements, scores (BI-RADS, Gleason, PI-RADS, MTA, EDSS),
  vertebral levels, times, doses, series/image numbers, codes in parentheses and eponyms.

Deterministic: report ``i`` of ``seed`` is the same on every machine, whatever ``count`` is asked for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from imagebank.deid.identifiers import MIN_NAME_PART, KnownIdentifiers
from imagebank.synth.people import FAMILY_NAMES, FEMALE_GIVEN_NAMES, INSTITUTIONS, MALE_GIVEN_NAMES, PHYSICIAN_NAMES

Span = tuple[int, int, str]
Piece = str | tuple[str, str]  # plain text, or (text, category) for an identifier


@dataclass(frozen=True)
class LabelledReport:
    text: str
    spans: list[Span]  # (start, end, category) of every identifier in ``text``, sorted
    known: KnownIdentifiers  # what the patient's record knows (names, MRN, birth date, address, phone...)


def labelled_reports(count: int, seed: int = 0) -> Iterator[LabelledReport]:
    """``count`` reports, each of a different synthetic patient."""
    for index in range(count):
        yield labelled_report(index, seed)


def labelled_report(index: int, seed: int = 0) -> LabelledReport:
    """Report number ``index`` of ``seed`` (independent of every other report)."""
    rng = _rng(seed, index)
    patient = _Patient.make(rng)
    return _Report(rng, patient).build()


# ---------------------------------------------------------------------------------------------- pools

_STREETS = ("Maple Avenue", "Oak Street", "Cedar Lane", "Elm St.", "Lakeview Drive", "Hillcrest Road",
            "Washington Boulevard", "Mill Rd", "Church Street", "Sunset Terrace", "Harbor Blvd", "Pine Court",
            "Main St", "Riverside Dr.", "Orchard Way", "5th Avenue")
_CITIES = (("Springfield", "IL", "627", "217"), ("Riverside", "CA", "925", "951"), ("Franklin", "TN", "370", "615"),
           ("Greenville", "SC", "296", "864"), ("Madison", "WI", "537", "608"), ("Salem", "OR", "973", "503"),
           ("Georgetown", "KY", "403", "502"), ("Burlington", "VT", "054", "802"), ("Fort Collins", "CO", "805", "970"),
           ("Ann Arbor", "MI", "481", "734"))
_OUTSIDE_PLACES = ("Mercy", "St. Anne's", "Lakeside", "Northgate", "Valley", "Bayview", "Sacred Heart",
                   "Good Samaritan", "Cedar Grove", "Saint Luke's", "Harborview", "Mount Hope", "Westbrook Regional")
_OUTSIDE_KINDS = ("Hospital", "Medical Center", "Imaging Center", "Clinic", "Health System", "Infirmary",
                  "University Hospital", "Cancer Center")
_STAFF_EXTRA = ("Maria Lopez", "Helen Marsh", "Rafael Ortega", "Ingrid Halvorsen", "Samuel Adeyemi", "Yuko Nakamura",
                "Tomás Ferreira", "Priya Raman", "Claire Beaumont", "Jean-Luc Girard", "Aoife O'Connell",
                "Lukas Brandt", "Nadia Haddad", "Kwame Mensah", "Sofía Castillo")
_RELATIONS = ("daughter", "son", "wife", "husband", "sister", "brother", "niece", "partner")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_REFERENCE = dt.date(2025, 6, 30)  # "today" of the synthetic reports


def _rng(seed: int, index: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}/reports/{index}".encode()).digest()
    # Deterministic, seeded randomness for synthetic data (never for secrets): B311 does not apply.
    return random.Random(int.from_bytes(digest[:8], "big"))  # nosec B311


_NOT_DECOMPOSED = str.maketrans({"ı": "i", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "ß": "ss"})


def _ascii(text: str) -> str:
    """The spelling a system without accents stores: "Núñez" -> "Nunez", "Yılmaz" -> "Yilmaz"."""
    return unicodedata.normalize("NFKD", text.translate(_NOT_DECOMPOSED)).encode("ascii", "ignore").decode()


def _typo(word: str, rng: random.Random) -> str:
    """One realistic slip: two neighbours swapped, a letter doubled, dropped or replaced."""
    letters = "aeiounrstl"
    for _ in range(10):
        i = rng.randint(1, len(word) - 2)
        kind = rng.choice(("swap", "swap", "double", "drop", "replace"))
        if kind == "swap":
            typo = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif kind == "double":
            typo = word[:i] + word[i] + word[i:]
        elif kind == "drop":
            typo = word[:i] + word[i + 1:]
        else:
            typo = word[:i] + rng.choice(letters) + word[i + 1:]
        if typo != word:
            return typo
    return word + word[-1]


# ---------------------------------------------------------------------------------------------- dates


def _date_formats() -> dict[str, Callable[[dt.date], str]]:
    return {
        "iso": lambda d: d.isoformat(),
        "us": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
        "us_short": lambda d: f"{d.month}/{d.day}/{d.year % 100:02d}",
        "dotted": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
        "dmy_text": lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
        "mdy_text": lambda d: f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
        "mdy_abbr": lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day} {d.year}",
        "da": lambda d: d.strftime("%Y%m%d"),
        "dmy_abbr": lambda d: f"{d.day:02d}-{_MONTHS[d.month - 1][:3]}-{d.year}",
        "ordinal": lambda d: f"{_MONTHS[d.month - 1]} {d.day}{_ordinal(d.day)}, {d.year}",
        "ymd_slash": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
        "dmy_abbr_short": lambda d: f"{d.day}-{_MONTHS[d.month - 1][:3]}-{d.year % 100:02d}",
        "us_dash": lambda d: f"{d.month:02d}-{d.day:02d}-{d.year}",
        "dmy_of": lambda d: f"{d.day}{_ordinal(d.day)} of {_MONTHS[d.month - 1]} {d.year}",
    }


def _ordinal(day: int) -> str:
    return "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


_FORMATS = _date_formats()


# ---------------------------------------------------------------------------------------------- people


@dataclass
class _Patient:
    given: str
    family: str
    sex: str
    middle: str  # a middle initial, or ""
    birth: dt.date
    mrn: str
    street: str
    city: str
    state: str
    zip_code: str
    phone: str
    email: str
    record_ascii: bool  # the record spells the name without accents (the report may use them)

    @classmethod
    def make(cls, rng: random.Random) -> _Patient:
        sex = rng.choice("MF")
        given = rng.choice(MALE_GIVEN_NAMES if sex == "M" else FEMALE_GIVEN_NAMES)
        family = rng.choice(FAMILY_NAMES)
        age = rng.choice((rng.randint(20, 89), rng.randint(20, 89), rng.randint(20, 89), rng.randint(90, 101)))
        birth = _REFERENCE - dt.timedelta(days=age * 365 + rng.randint(0, 364))
        number = rng.randint(10_000, 99_999_999)
        mrn = rng.choice((f"{number:08d}", f"MRN{number:08d}", f"E{number % 10**7:07d}",
                          f"{number % 1000:03d}-{number // 1000 % 1000:03d}-{rng.randint(100, 999)}"))
        city, state, zip_prefix, area = rng.choice(_CITIES)
        street = f"{rng.randint(1, 9999)} {rng.choice(_STREETS)}"
        if rng.random() < 0.15:
            street += f", Apt {rng.randint(1, 40)}{rng.choice('ABCD')}"
        phone = f"({area}) 555-01{rng.randint(0, 99):02d}"
        email = f"{_ascii(given).lower()}.{_ascii(family).lower().replace(' ', '').replace(chr(39), '')}" \
                f"{rng.randint(1, 99)}@example.com"
        middle = rng.choice("ABCDEFGHJKLMNPRSTW") if rng.random() < 0.2 else ""
        return cls(given, family, sex, middle, birth, mrn, street, city, state,
                   f"{zip_prefix}{rng.randint(0, 99):02d}", phone, email, rng.random() < 0.3)

    def known(self, accession: str, exam: dt.date) -> KnownIdentifiers:
        """As the archive would collect it: the FHIR Patient, plus the DICOM header of the study."""
        given, family = (_ascii(self.given), _ascii(self.family)) if self.record_ascii else (self.given, self.family)
        resource = {
            "resourceType": "Patient",
            "identifier": [{"system": "https://ibgh.example.org/fhir/sid/mrn", "value": self.mrn}],
            "name": [{"family": family, "given": [given]}],
            "telecom": [{"system": "phone", "value": self.phone}, {"system": "email", "value": self.email}],
            "birthDate": self.birth.isoformat(),
            "address": [{"line": [self.street], "city": self.city, "state": self.state, "postalCode": self.zip_code}],
        }
        known = KnownIdentifiers()
        known.collect_fhir(resource)
        known.add_name(f"{family.upper()}^{given.upper()}")
        known.add_id(accession)
        known.add_date(exam.strftime("%Y%m%d"))
        return known


def _staff_name(rng: random.Random) -> str:
    if rng.random() < 0.5:
        family, given = PHYSICIAN_NAMES[rng.randrange(len(PHYSICIAN_NAMES))].split("^")[:2]
        return f"{given} {family}"
    if rng.random() < 0.5:
        return rng.choice(_STAFF_EXTRA)
    return f"{rng.choice(MALE_GIVEN_NAMES + FEMALE_GIVEN_NAMES)} {rng.choice(FAMILY_NAMES)}"


# ---------------------------------------------------------------------------------------------- the report


class _Report:
    def __init__(self, rng: random.Random, patient: _Patient) -> None:
        self.rng = rng
        self.p = patient
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.length = 0
        self.exam = _REFERENCE - dt.timedelta(days=rng.randint(1, 2000))
        self.accession = rng.choice((f"A{rng.randint(10**6, 10**7 - 1)}", f"ACC{rng.randint(10**7, 10**8 - 1)}",
                                     f"RAD-{self.exam.year}-{rng.randint(10000, 99999)}"))
        self.referring = _staff_name(rng)
        self.radiologist = _staff_name(rng)
        self.own = rng.choice(INSTITUTIONS)[0]
        self.outside = f"{rng.choice(_OUTSIDE_PLACES)} {rng.choice(_OUTSIDE_KINDS)}"

    # -- writing ------------------------------------------------------------------------------------
    def put(self, *pieces: Piece) -> None:
        for piece in pieces:
            if isinstance(piece, tuple):
                text, category = piece
                self.spans.append((self.length, self.length + len(text), category))
            else:
                text = piece
            self.parts.append(text)
            self.length += len(text)

    def date(self, day: dt.date, formats: tuple[str, ...] | None = None) -> tuple[str, str]:
        name = self.rng.choice(formats or tuple(_FORMATS))
        return _FORMATS[name](day), "date"

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # -- names --------------------------------------------------------------------------------------
    def patient_name(self, style: str | None = None) -> tuple[str, str]:
        p, rng = self.p, self.rng
        given, family = p.given, p.family
        if not p.record_ascii and self.chance(0.2):  # the report without accents, the record with them
            given, family = _ascii(given), _ascii(family)
        style = style or rng.choice(("full", "full", "last_first", "upper", "initial", "initial_last", "lower", "typo",
                                     "pn", "middle"))
        if style == "typo":
            longest = max((given, family), key=len)
            if len(longest) >= 5 and " " not in longest:
                if longest == family:
                    family = _typo(family, rng)
                else:
                    given = _typo(given, rng)
            style = "full"
        text = {
            "full": f"{given} {family}",
            "last_first": f"{family}, {given}",
            "upper": f"{family.upper()}, {given.upper()}",
            "initial": f"{given[0]}. {family}",
            "initial_last": f"{family}, {given[0]}.",
            "lower": f"{given.lower()} {family.lower()}",
            "pn": f"{family.upper()}^{given.upper()}",
            "middle": f"{given} {p.middle or 'J'}. {family}",
        }[style]
        return text, "name"

    def surname_alone(self) -> tuple[str, str] | None:
        """The bare surname, as a sentence uses it: only the record can tell it is a name."""
        family = self.p.family
        if len(family) < MIN_NAME_PART or " " in family:
            return None  # "Li" (shorter than MIN_NAME_PART: not searched alone), "de Vries" (two words)
        if len(family) >= 5 and self.chance(0.25):
            family = _typo(family, self.rng)
        return family, "name"

    def staff(self, name: str | None = None) -> list[Piece]:
        """A colleague after a title, as reports write them."""
        rng = self.rng
        name = name or _staff_name(rng)
        given, family = name.split(" ", 1)
        style = rng.choice(("full", "full", "last", "initial", "lower", "upper"))
        if style == "full":
            return ["Dr. ", (name, "name")]
        if style == "last":
            return ["Dr. ", (family, "name")]
        if style == "initial":
            return ["Dr ", (f"{given[0]}. {family}", "name")]
        if style == "lower":
            return ["dr. ", (name.lower(), "name")]
        return ["DR. ", (name.upper(), "name")]

    # -- sections -------------------------------------------------------------------------------------
    def build(self) -> LabelledReport:
        rng = self.rng
        sections: list[Callable[[], None]] = [self.header, self.history, self.technique, self.comparison,
                                              self.findings, self.impression, self.communication, self.signature]
        for section in sections:
            section()
        known = self.p.known(self.accession, self.exam)
        if rng.random() < 0.5:
            known.add_name(f"{self.referring.split(' ')[-1]}^{self.referring.split(' ')[0]}")
        return LabelledReport("".join(self.parts), sorted(self.spans), known)

    def header(self) -> None:
        p, rng = self.p, self.rng
        style = rng.choice(("ehr", "compact", "labelled"))
        exam_name = rng.choice(("CT CHEST W/O CONTRAST", "MRI BRAIN W/WO CONTRAST", "MRI PROSTATE MULTIPARAMETRIC",
                                "MAMMOGRAPHY SCREENING BILATERAL", "CT ABDOMEN PELVIS W CONTRAST",
                                "MRI LUMBAR SPINE W/O CONTRAST", "XR CHEST 2 VIEWS"))
        if style == "ehr":  # the layout of imagebank.synth.ehr's DiagnosticReport text
            self.put("RADIOLOGY REPORT\nPatient: ", self.patient_name(rng.choice(("full", "full", "lower", "pn"))),
                     "\nMRN: ", (p.mrn, "id"), "\nDOB: ", (p.birth.isoformat(), "date"),
                     "\nAccession: ", (self.accession, "id"), f"\nExam: {exam_name}",
                     "\nExam date: ", (self.exam.isoformat(), "date"),
                     "\nReferring physician: Dr. ", (self.referring, "name"),
                     "\nInstitution: ", (self.own, "institution"), "\n\n")
        elif style == "compact":
            if self.chance(0.5):
                self.put((self.own.upper(), "institution"), " - DEPARTMENT OF RADIOLOGY\n")
            self.put("Patient: ", self.patient_name(rng.choice(("upper", "upper", "last_first", "pn"))), "  MRN: ",
                     (p.mrn, "id"), "  DOB: ", self.date(p.birth, ("us", "us", "dotted", "iso", "da")), "\n",
                     "Accession # ", (self.accession, "id"), "   Exam date: ",
                     self.date(self.exam, ("us", "iso", "dmy_abbr")), "\n", f"EXAM: {exam_name}\n",
                     "Referring: ", *self.staff(self.referring), "\n\n")
        else:
            self.put("Name: ", self.patient_name(rng.choice(("full", "last_first", "middle"))), "\n",
                     "Medical Record Number: ", (p.mrn, "id"), "\n", "Date of birth: ",
                     self.date(p.birth, ("mdy_text", "dmy_text", "us", "ordinal")), "\n",
                     "Acc. No.: ", (self.accession, "id"), "\n",
                     "Ordering physician: ", *self.staff(self.referring), "\n",
                     "Performed at: ", (self.own, "institution"), ", ", (self.street_elsewhere(), "address"), ", ",
                     *self.city_state_zip(), "\n",
                     "Date of service: ", self.date(self.exam, ("mdy_text", "dmy_text", "mdy_abbr", "iso")), "\n\n")

    def street_elsewhere(self) -> str:
        return f"{self.rng.randint(1, 2500)} {self.rng.choice(_STREETS)}"

    def city_state_zip(self) -> list[Piece]:
        city, state, zip_prefix, _ = self.rng.choice(_CITIES)
        return [(city, "address"), f", {state} ", (f"{zip_prefix}{self.rng.randint(0, 99):02d}", "zip")]

    def age_phrase(self) -> list[Piece]:
        p = self.p
        age = self.exam.year - p.birth.year - ((self.exam.month, self.exam.day) < (p.birth.month, p.birth.day))
        word = "man" if p.sex == "M" else "woman"
        form = self.rng.choice(("{a}-year-old {w}", "{a} year old {w}", "{a} yo {w}", "{w} aged {a}", "{a} y/o {w}",
                                "{a}yo {w}", "{w}, age {a},"))
        before, after = form.split("{a}")
        before, after = before.replace("{w}", word), after.replace("{w}", word)
        return [before, (str(age), "age") if age >= 90 else str(age), after]

    def history(self) -> None:
        p, rng = self.p, self.rng
        self.put("CLINICAL HISTORY: ", *self.age_phrase(), " ")
        self.put(rng.choice((
            "with a persistent cough and a 12 mm nodule on prior imaging. ",
            "with elevated PSA (4.2 ng/mL, previously 3.1 ng/mL). " if p.sex == "M" else
            "with a palpable lump at 10 o'clock in the right breast. ",
            "with known Parkinson's disease and new falls. ",
            "with Crohn's disease; evaluate for stricture. ",
            "with a history of Hodgkin lymphoma, in remission. ",
            "with progressive memory loss, suspected Alzheimer's disease. ",
            "with low back pain radiating to the left leg, L5 distribution. ",
        )))
        if self.chance(0.5):
            surname = self.surname_alone()
            if surname is not None:
                self.put(surname, rng.choice((" reports worsening symptoms since ", " has been unwell since ")),
                         self._short_date(), ". ")
        if self.chance(0.3):
            title = rng.choice(("Mr.", "Mr")) if p.sex == "M" else rng.choice(("Mrs.", "Ms.", "Ms", "Mrs"))
            self.put(f"{title} ", self.surname_alone() or self.patient_name("full"),
                     " is on aspirin 81 mg and atorvastatin 40 mg daily. ")
        if self.chance(0.15):
            surname = self.surname_alone()
            if surname is not None:
                self.put(surname, "'s ", rng.choice(("wife", "husband", "daughter", "son")),
                         " reports that the pain wakes the patient at night. ")
        if self.chance(0.15) and len(p.given) >= MIN_NAME_PART and " " not in p.given:
            self.put((p.given, "name"), " was referred after a fall on ", self.date(
                self.exam - dt.timedelta(days=rng.randint(3, 40))), ". ")
        if self.chance(0.3):
            given = p.given if " " not in p.given else p.given.split()[0]
            if len(given) >= MIN_NAME_PART:
                self.put("Per the referral letter, ", (given, "name"), " was seen at ", (self.outside, "institution"),
                         " in ", (f"{_MONTHS[rng.randrange(12)]} {self.exam.year - 1}", "date"), ". ")
        if self.chance(0.25):
            self.put("Lives at ", (p.street, "address"), ", ", (p.city, "address"), f", {p.state} ",
                     (p.zip_code, "zip"), "; home phone ", (p.phone, "phone"), ". ")
        if self.chance(0.2):
            self.put("Lives alone in ", (p.city, "address"), "; e-mail on file ", (p.email, "email"), ". ")
        if self.chance(0.15):
            relation = rng.choice(_RELATIONS)
            female = relation in ("daughter", "wife", "sister", "niece")
            relative = f"{rng.choice(FEMALE_GIVEN_NAMES if female else MALE_GIVEN_NAMES)} {p.family}"
            title = "Mrs." if female else "Mr."
            self.put(f"Emergency contact: {title} ", (relative, "name"), f" ({relation}), ",
                     (rng.choice(("+1 217 555 0199", "(608) 555-0143", "+44 20 7946 0958", "503.555.0178")), "phone"),
                     ". ")
        if self.chance(0.1):
            self.put("SSN: ", (f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}", "id"), ". ")
        self.put("\n\n")

    def _short_date(self) -> tuple[str, str]:
        day = self.exam - dt.timedelta(days=self.rng.randint(5, 60))
        month = _MONTHS[day.month - 1]
        return self.rng.choice((f"{month} {day.day}", f"{day.day} {month}", f"{month[:3]} {day.day}")), "date"

    def technique(self) -> None:
        self.put("TECHNIQUE: ", self.rng.choice((
            "Helical CT of the chest without intravenous contrast; 1 mm lung and 3 mm mediastinal reconstructions.",
            "Multiparametric MRI of the prostate at 3 T: axial T2, DWI (b 1400) with ADC map.",
            "Multiplanar MRI of the brain before and after 7.5 mL gadobutrol: sagittal 3D T1, axial T2 and FLAIR.",
            "Bilateral full-field digital mammography, CC and MLO views.",
            "Helical CT of the abdomen and pelvis after 100 mL of iodinated contrast (Omnipaque 350).",
            "Sagittal T1 and T2 MRI of the lumbar spine without contrast.",
            "PA and lateral radiographs of the chest.",
        )), " Scan started at ", f"{self.rng.randint(7, 18)}:{self.rng.randint(0, 59):02d}", ".")
        if self.chance(0.3):
            self.put(" Technologist: ", *self._technologist())
        self.put("\n\n")

    def _technologist(self) -> list[Piece]:
        name = _staff_name(self.rng)
        given, family = name.split(" ", 1)
        return [(f"{given[0]}. {family}", "name"), ", RT(R)."] if self.chance(0.5) else [(name, "name"), "."]

    def comparison(self) -> None:
        rng = self.rng
        if self.chance(0.15):
            self.put("COMPARISON: None.\n\n")
            return
        prior = self.exam - dt.timedelta(days=rng.randint(60, 1500))
        self.put("COMPARISON: ", rng.choice(("Compared with CT of ", "MRI dated ", "Prior study from ", "CT chest on ")),
                 self.date(prior), ".")
        if self.chance(0.4):
            self.put(" Outside images from ", (self.outside, "institution"), " (", self.date(
                prior - dt.timedelta(days=rng.randint(30, 400))), ") were also reviewed")
            if self.chance(0.5):
                self.put("; their reading room can be reached at ", (rng.choice((
                    "(555) 010-2299", "+1 (555) 010-4411 ext. 204", "555-010-7788 x31", "+49 30 12345678",
                    "+33 1 23 45 67 89", "0049 89 4140 0", "1-800-555-0199", "617 555 0123")), "phone"))
            self.put(".")
        if self.chance(0.2):
            self.put(" Prior records filed under ", (str(rng.randint(10_000_000, 99_999_999)), "id"), ".")
        if self.chance(0.2):
            mrn = self.p.mrn
            digits = "".join(c for c in mrn if c.isdigit())
            shown = f"{digits[:4]}-{digits[4:]}" if "-" not in mrn else digits
            self.put(" Patient also registered under ", (shown, "id"), ".")
        self.put("\n\n")

    def findings(self) -> None:
        rng = self.rng
        size, other = rng.randint(4, 28), rng.randint(3, 15)
        options = (
            f"Solid {size} mm nodule in the right upper lobe (series 3, image {rng.randint(20, 140)}), previously "
            f"{max(3, size - 2)} mm. No mediastinal lymphadenopathy. No pleural effusion.",
            f"{size} mm lesion in the left posterolateral peripheral zone, PI-RADS {rng.choice((3, 4, 5))}. ADC "
            f"{rng.randint(550, 850)} x10^-6 mm2/s. Prostate volume {rng.randint(30, 70)} mL. PSA density 0.15.",
            "Disc bulge at L4-L5 with mild narrowing of the left lateral recess; L5-S1 disc desiccation. The conus "
            "terminates at L1. C5 and T12 vertebral bodies unremarkable on the scout.",
            f"Irregular {size} mm mass at {rng.randint(1, 12)} o'clock in the right breast, {rng.randint(2, 9)} cm from "
            f"the nipple. BI-RADS {rng.choice((4, 5))}. Scattered fibroglandular density (B).",
            f"Generalized volume loss with hippocampal atrophy (MTA score {rng.randint(1, 4)}). Fazekas 1 white matter "
            f"changes. No hemorrhage. {other} T2/FLAIR lesions, none enhancing; EDSS 3.5 noted clinically.",
            f"Terminal ileum wall thickening up to {other} mm over a {size} cm segment, consistent with active Crohn's "
            f"disease. No abscess. Liver segments 7 and 8 unremarkable.",
            f"Small Baker's cyst in the right popliteal fossa ({size} mm). Marked joint effusion. Segond fracture "
            "excluded. Findings are unusual in a young patient.",
            "The lungs are clear. Heart size is normal. Blood pressure at the time of the scan 142/90 mmHg, heart "
            "rate 72/min. Creatinine 1.1 mg/dL, eGFR 68 mL/min/1.73m2.",
        )
        self.put("FINDINGS:\n", rng.choice(options))
        if self.chance(0.3):
            self.put(" Gleason 3+4=7 adenocarcinoma on the prior biopsy (ICD-10 C61), PSA (LOINC 2857-1) 6.5 ng/mL.")
        if self.chance(0.2):
            self.put(" Stable since 2019.")
        if self.chance(0.3):
            surname = self.surname_alone()
            if surname is not None:
                self.put(" ", surname, rng.choice((" tolerated the examination well.", " could not hold breath.")))
        self.put("\n\n")

    def impression(self) -> None:
        rng = self.rng
        self.put("IMPRESSION:\n", rng.choice((
            "1. Stable pulmonary nodule; follow-up CT in 3-6 months per Fleischner guidelines.",
            "1. PI-RADS 5 lesion, clinically significant cancer likely. Targeted biopsy recommended.",
            "1. Degenerative disc disease at L4-L5 without canal stenosis.",
            "1. BI-RADS 4: suspicious. Ultrasound-guided core biopsy recommended.",
            "1. Medial temporal lobe atrophy, in keeping with Alzheimer's disease.",
            "1. Active terminal ileitis, consistent with Crohn's disease.",
            "1. No acute cardiopulmonary process.",
        )))
        if self.chance(0.3):
            name = self.patient_name(rng.choice(("lower", "typo", "initial", "initial_last", "full")))
            self.put(" Results to be shared with ", name, " at the next visit.")
        self.put("\n\n")

    def communication(self) -> None:
        rng = self.rng
        if self.chance(0.4):
            when = self.exam + dt.timedelta(days=rng.randint(0, 2))
            self.put("These findings were discussed by telephone with ", *self.staff(self.referring), " at ",
                     (rng.choice(("(555) 010-1234", "617-555-0100 ext. 2231", "+1 617 555 0199", "555.010.3344")),
                      "phone"), " on ", self.date(when), f" at {rng.randint(7, 19)}:{rng.randint(0, 59):02d}.\n")
        if self.chance(0.25):
            self.put("Questions about this report: call back the reading room at ",
                     (f"(555) 010-{rng.randint(1000, 9999)}", "phone"), ", pager ", (str(rng.randint(1000, 9999)),
                                                                                      "phone"), ".\n")
        if self.chance(0.2):
            host = f"{_ascii(self.outside.split(' ')[0]).lower().replace(chr(39), '').replace('.', '')}-imaging.org"
            self.put("Images available at ", (f"https://portal.{host}/results/{rng.randint(1000, 99999)}", "url"),
                     " or by e-mail to ", (f"radiology@{host}", "email"), ".\n")
        if self.chance(0.15):
            self.put("Outside facility: ", (self.outside, "institution"), ", ", (self.street_elsewhere(), "address"),
                     ", ", *self.city_state_zip(), ".\n")

    def signature(self) -> None:
        rng = self.rng
        when = self.exam + dt.timedelta(days=rng.randint(0, 3))
        time = f"{rng.randint(7, 19)}:{rng.randint(0, 59):02d}"
        style = rng.choice(("electronic", "dictated", "ehr", "plain", "degree"))
        if style == "electronic":
            self.put("\nElectronically signed by ", *self.staff(self.radiologist), " on ", self.date(when), f" {time}\n")
        elif style == "dictated":
            self.put("\nDictated by: ", *self.staff(self.radiologist), "\nTranscribed by: ", *self._technologist(),
                     "\nDate: ", self.date(when), "\n")
        elif style == "ehr":
            self.put("Electronically signed by Dr. ", (self.radiologist, "name"), " on ", (when.isoformat(), "date"),
                     ".\n")
        elif style == "degree":
            self.put("\nRead by: ", (self.radiologist, "name"), ", MD, on ", self.date(when), "\n")
        else:
            given, family = self.radiologist.split(" ", 1)
            self.put("\nRadiologist: ", (f"{family.upper()}, {given.upper()}", "name"), " MD\nSigned: ",
                     self.date(when, ("da", "us", "iso")), f" {time}\n")
        if self.chance(0.2):
            self.put("cc: ", *self.staff(), ", ", (self.own, "institution"), "\n")


__all__ = ["LabelledReport", "labelled_report", "labelled_reports"]
