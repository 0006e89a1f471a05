"""The buyer's files that `market bounty` reads (a proposal, an evaluation set, test labels),
each checked, with a one-line `UserError` that says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from market.cli.common import (
    UserError,
)


def load_template(spec: Path) -> dict[str, Any]:
    try:
        template = json.loads(spec.read_bytes())
    except ValueError as exc:
        raise UserError(f"{spec} is not JSON ({exc}); a proposal is a JSON document") from None
    if not isinstance(template, dict):
        raise UserError(f"{spec} must hold a JSON object (a proposal)")
    return template


_EVALUATION_ARRAYS = ("x_val", "y_val", "x_test")


def read_evaluation(path: Path, classes: int) -> tuple[Any, list[str]]:
    """The evaluation set in the `.npz` at `path` (no pickles), checked, and the names of any
    other arrays the file holds (not published); `UserError` saying what is wrong otherwise."""
    import zipfile

    import numpy as np

    from nodes.evalset import EnsembleJobError, EvaluationSet

    layout = (
        "an evaluation set is an .npz (numpy.savez) of x_val (validation rows x features), "
        "y_val (their integer labels) and x_test (test rows x features)"
    )
    unreadable = (OSError, EOFError, zipfile.BadZipFile)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError:  # neither .npy nor .npz: numpy would have to unpickle it
        raise UserError(f"{path} is not an .npz archive; {layout}") from None
    except unreadable as exc:
        raise UserError(f"{path} is not a readable .npz ({exc}); {layout}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UserError(f"{path} holds a single array, not an .npz archive; {layout}")
    with loaded as npz:
        missing = [a for a in _EVALUATION_ARRAYS if a not in npz.files]
        if missing:
            held = ", ".join(npz.files) or "no arrays"
            raise UserError(f"{path} lacks {', '.join(missing)} (it holds {held}); {layout}")
        extra = sorted(set(npz.files) - set(_EVALUATION_ARRAYS))
        try:
            arrays = {a: npz[a] for a in _EVALUATION_ARRAYS}
        except ValueError:
            raise UserError(
                f"{path} holds object (pickled) arrays, which are not loaded; save plain "
                "numeric arrays"
            ) from None
        except unreadable as exc:
            raise UserError(f"{path} is not a readable .npz ({exc}); {layout}") from None
    try:
        evaluation = EvaluationSet(**arrays, classes=classes)
    except EnsembleJobError as exc:
        raise UserError(f"{path}: {exc}") from None
    return evaluation, extra


def read_labels(path: Path) -> Any:
    """The buyer's test labels from its own file: an `.npz` with `y_test` (or one array), or
    text with one integer label per line (a CSV's one column, a header line allowed)."""
    import numpy as np

    what = f"--test-labels {path}"
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.files)
                name = "y_test" if "y_test" in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise UserError(f"{what} holds {names}; it needs a y_test array")
                labels = np.asarray(npz[name])
        else:
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            if lines and not lines[0].lstrip("-").isdigit():
                lines = lines[1:]  # a header
            if any("," in ln for ln in lines):
                raise UserError(f"{what} has more than one column; give one label per line")
            labels = np.array([int(ln) for ln in lines])
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what}: {exc}; give an .npz with y_test or one "
                        "integer label per line") from None  # fmt: skip
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iu":
        raise UserError(f"{what} must hold one integer label per test row")
    return labels
