"""Errors of the notification package."""

from __future__ import annotations


class MailError(Exception):
    """An email could not be handed to the mail server."""


class InvalidAddress(ValueError):
    """An email address is malformed or could smuggle extra headers into a message."""
