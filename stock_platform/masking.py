"""Masking a secret in every form it can take in a log line or an error message.

A secret rarely shows up as typed: requests puts it in URLs percent-encoded (``quote_plus``), other
clients with ``quote``, in upper- or lower-case hex; a JSON log line escapes it, a ``repr`` of an exception
or of bytes escapes it differently. Masking only the typed form leaks a key with any reserved character.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

MASK = "***"

# An escape whose hex digits an encoder may write in either case: %2f and %2F are the same URL.
_HEX_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|\\x[0-9A-Fa-f]{2}")


def secret_forms(secret: str) -> set[str]:
    """``secret`` as typed and as each encoder that puts text into logs and messages would write it."""
    urls = {quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="/")}
    # A URL carried inside another URL (a redirect or proxy target) is encoded twice.
    urls |= {quote(u, safe="") for u in urls}
    quoted = {
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        repr(secret.encode("utf-8", "surrogatepass"))[2:-1],
    }
    return {secret} | urls | quoted


def _form_pattern(form: str) -> str:
    parts, start = [], 0
    for escape in _HEX_ESCAPE.finditer(form):
        parts += [re.escape(form[start : escape.start()]), f"(?i:{re.escape(escape.group())})"]
        start = escape.end()
    return "".join([*parts, re.escape(form[start:])])


class Masker:
    """Replaces every form of the given secrets (empty ones ignored) with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in secret_forms(secret)}
        # Longest first, so a form containing another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(_form_pattern, ordered))) if ordered else None

    def __bool__(self) -> bool:
        """Whether there is anything to mask."""
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text


class MaskingFilter(logging.Filter):
    """A handler filter that masks the secrets in a record's message, exception text and stack."""

    def __init__(self, mask: Masker) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - arguments that do not fit the format must not stop the masking
            message = f"{record.msg} {record.args!r}"
        # Render once and drop the arguments: a formatter would otherwise render them again, unmasked.
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # exc_info goes: formatters print exc_text instead of formatting the exception anew.
            record.exc_text, record.exc_info = self.mask(record.exc_text), None
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: self.mask(v) if isinstance(v, str) else v for k, v in fields.items()}
        return True


@contextlib.contextmanager
def masked_logging(secrets: Iterable[str], *loggers: str) -> Iterator[Masker]:
    """Mask ``secrets`` in everything the handlers of the root logger, of ``loggers`` and Python's
    last-resort handler emit, for the duration of the block.

    On the handlers, not the loggers: a logger's filter sees only records logged on that very logger,
    while the key also reaches logs from libraries (urllib3 logs request URLs, token included).
    """
    mask = Masker(secrets)
    filter_ = MaskingFilter(mask)
    handlers: set[logging.Handler] = set()
    if mask:  # with no secret set (the simulated source) the records stay as they are
        handlers = {h for name in ("", *loggers) for h in logging.getLogger(name).handlers}
        handlers |= {logging.lastResort} if logging.lastResort is not None else set()
    for handler in handlers:
        handler.addFilter(filter_)
    try:
        yield mask
    finally:
        for handler in handlers:
            handler.removeFilter(filter_)
