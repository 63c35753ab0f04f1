"""Errors users see.  Every message names what to fix (file, line, field)."""

from __future__ import annotations


class CondsimError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits 1, no traceback."""

    exit_code = 1


class InputError(CondsimError):
    """Bad user input at a known place: ``file:line: field 'x': problem``."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ""
        if file is not None:
            where = str(file)
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            where += f"field {field!r}: "
        super().__init__(where + message)


def check_string(value: str, name: str | None, line: int | None, fld: str) -> str:
    """NUL and lone surrogates are refused on both backends (PostgreSQL cannot store them)."""
    if "\x00" in value:
        raise InputError(f"contains a NUL character (\\x00) at character {value.index(chr(0)) + 1}; remove it",
                         file=name, line=line, field=fld)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(f"contains a lone surrogate {value[exc.start]!r} at character {exc.start + 1}: "
                             "not valid Unicode", file=name, line=line, field=fld) from None
    return value
