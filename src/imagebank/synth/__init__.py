"""The synthetic hospital: deterministic fake patients, their imaging and their EHR.

- :mod:`~imagebank.synth.plan` decides *what* exists (patients, conditions, studies, series) from a seed;
  each patient is derived on its own from ``(seed, index)``, so a million patients stream in constant
  memory and any single one can be regenerated in isolation.
- :mod:`~imagebank.synth.phantoms` draws real-looking anatomy (not noise) for each modality.
- :mod:`~imagebank.synth.dicom_writer` turns a planned instance into PS3.10 bytes.
- :mod:`~imagebank.synth.hospital` feeds those instances to the bulk ingest pipeline or to a folder.
- :mod:`~imagebank.synth.ehr` writes the same patients' FHIR R4 record (same MRNs, accessions, dates).
- :mod:`~imagebank.synth.reports` writes radiology report texts with every identifier labelled by its
  character span, to measure the de-identification text scrubber.
"""
