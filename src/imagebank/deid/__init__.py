"""De-identification: the only way from the clinical zone into the research zone (DESIGN.md).

- :mod:`.profile` -- DICOM PS3.15 Annex E Table E.1-1 (data file) and the options as switches.
- :mod:`.pseudonyms` -- keyed pseudonyms, per-patient date shifts and UID mapping (HMAC-SHA-256).
- :mod:`.dicom` -- applies a profile to a dataset at any depth of sequences.
- :mod:`.text` -- free-text scrubbing (known identifiers of the patient + general patterns).
- :mod:`.pixels` -- burned-in annotation risk, region cleaning, OCR; quarantine when unsafe.
- :mod:`.ehr` -- FHIR resources with the same pseudonyms and date shifts.
- :mod:`.verify` -- the leak verifier every output passes before release.
- :mod:`.vault` -- the linkage vault (pseudonym -> identity), honest broker only, audited.
- :mod:`.run` -- the batch job (files or archive studies -> released / quarantined).
"""
