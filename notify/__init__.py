"""Telling people about their downloads: email over SMTP (or the log when none is set)."""
