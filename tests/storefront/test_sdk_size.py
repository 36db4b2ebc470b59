"""The storefront SDK's budget (issue 9): static/cdp.js ≤ 8 KB minified and gzipped, and
nothing a strict Content-Security-Policy would refuse."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import rjsmin

SDK = Path(__file__).resolve().parents[2] / "static" / "cdp.js"
BUDGET = 8 * 1024


def sdk_minified_gzipped_bytes() -> int:
    minified = rjsmin.jsmin(SDK.read_text(encoding="utf-8"), keep_bang_comments=False)
    return len(gzip.compress(minified.encode("utf-8"), compresslevel=9))


def test_cdp_js_fits_the_budget_minified_and_gzipped() -> None:
    # given / when the SDK is minified with rjsmin and gzipped at level 9
    size = sdk_minified_gzipped_bytes()
    print(f"static/cdp.js: {size} bytes minified+gzipped (budget {BUDGET})")

    # then it fits
    assert size <= BUDGET


def test_cdp_js_needs_no_eval_and_no_inline_styles() -> None:
    source = SDK.read_text(encoding="utf-8")
    code = re.sub(r"//[^\n]*|/\*.*?\*/", "", source, flags=re.S)  # comments may mention them
    assert "eval(" not in code
    assert "new Function" not in code
    assert ".style" not in code  # no inline styles: a style-src 'self' policy holds
    assert not re.search(r"setTimeout\(\s*['\"]", code)  # no string timers either
