"""De-identification at ingest (DICOM, videos, JPEG/PNG frames, label files), failing closed."""
