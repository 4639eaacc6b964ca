"""The access log never records query strings (emailed links carry tokens there)."""

from __future__ import annotations

import logging

from authql.app import RedactQueryStrings


def test_query_strings_are_cut_from_access_log_lines() -> None:
    """uvicorn's access record keeps the path and loses everything after '?'."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/auth/verify-email?token=s3cr3t", "1.1", 200),
        None,
    )
    assert RedactQueryStrings().filter(record)
    assert "s3cr3t" not in record.getMessage()
    assert "/auth/verify-email" in record.getMessage()
