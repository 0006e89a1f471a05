"""Runs pytest and treats "no tests collected" (exit code 5) as success, so that a marker
selection that happens to match nothing does not fail CI."""

import sys

import pytest

if __name__ == "__main__":
    code = pytest.main(sys.argv[1:])
    sys.exit(0 if code == pytest.ExitCode.NO_TESTS_COLLECTED else int(code))
