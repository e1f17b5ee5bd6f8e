"""Coverage-guided fuzzing of the capture reader (atheris).

    python fuzz/fuzz_capture.py fuzz/corpus/capture -max_total_time=60

Any input must end in segments and counts that add up, or in a CaptureError; strict=False must
never raise past the file header. Anything else (another exception, a crash, a hang) is a
finding: the input is written out by libFuzzer and becomes a regression test in
tests/test_fuzz_regressions.py.
"""
import io
import sys

import atheris

with atheris.instrument_imports():
    from fasttcp.capture import CaptureError, open_capture


def check(data: bytes) -> None:
    for strict in (True, False):
        try:
            with open_capture(io.BytesIO(data), strict=strict, chunk_size=4096) as cap:
                segments = sum(len(b.ipv4) + len(b.ipv6) for b in cap)
        except CaptureError:
            continue
        stats = cap.stats
        assert segments == stats.segments
        assert stats.packets == stats.segments + sum(stats.skipped.values())
        assert not strict or stats.error is None


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
