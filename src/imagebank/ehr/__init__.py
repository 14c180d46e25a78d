"""The EHR side: FHIR R4 ingest (Bundles, Bulk Data NDJSON), the patient index that links FHIR
patients with DICOM patients, the patient timeline and the FHIR read/search API."""
