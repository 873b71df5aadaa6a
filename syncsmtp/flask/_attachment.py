"""Flask-Mail's ``Attachment``: a file attached to a message, as plain data."""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping

__all__ = ["Attachment"]


class Attachment:
    """A file attached to a :class:`Message`, as in Flask-Mail.

    ``data`` (bytes, or text that is encoded as UTF-8) is required.
    ``content_type`` defaults to a guess from ``filename``, else
    ``text/plain`` for text and ``application/octet-stream`` for bytes;
    ``disposition`` to ``"attachment"``. ``headers`` are added to the part
    (``{"Content-ID": "<logo>"}`` for an inline image). As in Flask-Mail, a
    part without a ``filename`` gets no Content-Disposition header.
    """

    def __init__(
        self,
        filename: str | None = None,
        content_type: str | None = None,
        data: str | bytes | None = None,
        disposition: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if data is None:
            raise ValueError("The 'data' argument is required.")
        if content_type is None and filename is not None:
            content_type = mimetypes.guess_type(filename)[0]
        if content_type is None:
            content_type = "text/plain" if isinstance(data, str) else "application/octet-stream"
        self.data: str | bytes = data
        self.filename: str | None = filename
        self.content_type: str = content_type
        self.disposition: str = disposition or "attachment"
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"Attachment(filename={self.filename!r}, content_type={self.content_type!r})"
