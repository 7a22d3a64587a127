"""What the terminal shows of an engine's output: everything live, tracebacks only in the log."""

from __future__ import annotations

import pytest

from tunebook.engines.process import WithoutTracebacks

OUTPUT = (b"loading\n 10%|#   | 1/10\r 20%|##  | 2/10\rdone\n"
          b"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    save()\n"
          b"ValueError: bad\n\nThe above exception was the direct cause of the following exception:\n\n"
          b"Traceback (most recent call last):\n  File \"y.py\", line 2\n"
          b"OSError: [Errno 27] File too large\nafter\n\nlast\n")


@pytest.mark.parametrize("size", [1, 3, 7, 64, 100000])
def test_tracebacks_stay_out_of_the_terminal_however_the_output_is_chunked(size):
    shown = WithoutTracebacks()
    out = b"".join(shown.feed(OUTPUT[i:i + size]) for i in range(0, len(OUTPUT), size))
    assert out == b"loading\n 10%|#   | 1/10\r 20%|##  | 2/10\rdone\nafter\n\nlast\n"


def test_a_progress_bar_reaches_the_terminal_before_its_line_ends():
    shown = WithoutTracebacks()
    assert shown.feed(b" 10%|#   | 1/10\r") == b" 10%|#   | 1/10\r"
    assert shown.feed(b" 20%|##  | 2/10\r") == b" 20%|##  | 2/10\r"
    assert shown.feed(b"\n") == b"\n"
