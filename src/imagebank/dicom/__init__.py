"""Pure helpers over pydicom: UIDs, index attributes, DICOM JSON, person-name folding.

Nothing here opens a socket or touches storage.
"""
