"""Pure helpers over pydicom: UIDs, index attributes, DICOM JSON, person-name folding.

Nothing here opens a socket or touches storage.
"""


def quiet_pydicom() -> None:
    """Silence pydicom in this process: its warnings quote element values ("Invalid value for VR PN:
    'DOE^JOHN'"), and patient names, IDs and dates never go to a log. Every process that reads identified
    data calls this at start (the CLI, listener processes, ingest and de-identification workers)."""
    import logging
    import warnings

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom")
