"""One check for every bad-input CLI test: a non-zero exit, one line of explanation, no traceback.

Two shapes count as one line. Our own errors (MlxspecError / ClickException) print exactly
one non-empty stderr line, `Error: ...`. Click's usage errors (a bad option value, exit 2)
print its fixed three-part block: `Usage: ...`, `Try '... --help' for help.`, and one
`Error: ...` line; that block is Click's convention, so we accept it, but only with one
Error line and nothing else.
"""
from __future__ import annotations

from typing import Optional


def assert_one_line_error(result, contains: Optional[str] = None) -> str:
    """`result` is a click.testing.Result (or anything with exit_code, stderr and
    exception). Returns the error line."""
    out = (result.stdout or "") + (result.stderr or "")
    assert result.exit_code != 0, f"exit 0 on bad input; output:\n{out}"
    # CliRunner swallows an uncaught exception into .exception: that is the traceback case.
    exc = getattr(result, "exception", None)
    assert exc is None or isinstance(exc, SystemExit), f"uncaught {type(exc).__name__}: {exc}"
    assert "Traceback" not in out, out
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Usage:"):
        assert result.exit_code == 2, result.exit_code
        assert len(lines) == 3 and lines[1].startswith("Try '") and lines[2].startswith("Error: "), lines
        line = lines[2]
    else:
        assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{result.stderr}"
        line = lines[0]
    if contains is not None:
        assert contains in line, f"{contains!r} not in {line!r}"
    return line
