"""What a job kind needs at the nodes beyond the pure core (`compute.kinds`): the public inputs
its round is configured with (fetched here: an ensemble's evaluation set), its map at the light
node when that is not a vetted table map (an ensemble's model scores, a valuation's encrypted
scores), and checks against the deployment. A kind whose map is a vetted table function and
whose inputs come from the proposal alone needs nothing here (`TableSide`).

`node_side(proposal)` is the registry's lookup; the nodes call it and never branch on a kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute.maps import run_map
from compute.proposal import Proposal
from nodes.evalset import EvaluationSet, evaluation_for, model_records
from nodes.late import Member
from nodes.valuation import BlobCache, open_query_share, score_dataset


@dataclass(frozen=True)
class Mapped:
    """A light node's map output for one dataset: the records it shares, how many rows (or
    evaluation rows) they cover, and the payload every committee member gets alike."""

    records: np.ndarray
    rows: int
    payload: bytes = b""
    unit: str = "rows"
    caveat: str = ""
    """What the provider should know about what it shared (a valuation's clipped gradient)."""

    @property
    def note(self) -> str:
        """What was shared, for the light node's log and `node approvals`."""
        shared = f"{self.unit} on {self.rows} rows" if self.unit != "rows" else f"{self.rows} rows"
        return f"{shared} ({self.caveat})" if self.caveat else shared


class TableSide:
    """A kind whose map is a vetted function over the provider's table (`compute.maps`)."""

    def inputs(self, proposal: Proposal, blobs: BlobCache) -> dict[str, Any]:
        """The public inputs of the kind's round (`JobKind.public_inputs`), fetched."""
        return {}

    def map(
        self, proposal: Proposal, data: Any, inputs: Mapping[str, Any], blobs: BlobCache
    ) -> Mapped:
        records, report = run_map(proposal, data.load())
        return Mapped(records, report.rows_used)

    def check(self, proposal: Proposal, settlement_grace: int) -> str | None:
        """Why the deployment cannot serve the job, if it cannot."""
        return None

    def own_input(self, proposal: Proposal, value: Any, member: Member | None) -> Any:
        """What the round takes of a late input at `member` (its index and box key; None
        when only checking the input's form): the input itself, for a kind whose input is
        the same for every member (a forecast's outcomes)."""
        return value

    def valuation_terms(self, proposal: Proposal) -> Any:
        """The TIP terms of the heavy node's score-report phase; None for a kind without it."""
        return None


class EnsembleSide(TableSide):
    """The evaluation set, fetched and checked against the proposal; the holder's model scores
    it (the model never leaves the holder)."""

    def inputs(self, proposal: Proposal, blobs: BlobCache) -> dict[str, Any]:
        evaluation = evaluation_for(proposal, blobs)
        return {"evaluation": evaluation, "validation_labels": evaluation.y_val}

    def map(
        self, proposal: Proposal, data: Any, inputs: Mapping[str, Any], blobs: BlobCache
    ) -> Mapped:
        evaluation: EvaluationSet = inputs["evaluation"]
        records = model_records(data.model(), evaluation)
        rows = len(evaluation.x_val) + len(evaluation.x_test)
        return Mapped(records, rows, unit="probabilities")


class ValuationSide(TableSide):
    """The rows' summed gradient, shared; each row's score under the buyer's CKKS key, sent
    for the buyer's view (`nodes.valuation`); each member's own share of the buyer's query,
    opened from the late input."""

    def map(
        self, proposal: Proposal, data: Any, inputs: Mapping[str, Any], blobs: BlobCache
    ) -> Mapped:
        scored = score_dataset(proposal, data.load(), blobs)
        caveat = (
            f"{scored.clipped} of the summed gradient's {scored.records.size} coordinates "
            "clipped to the buyer's encoding bound: this data's total influence is understated"
            if scored.clipped
            else ""
        )
        return Mapped(scored.records, scored.rows, scored.payload, caveat=caveat)

    def valuation_terms(self, proposal: Proposal) -> Any:
        return proposal.valuation

    def own_input(self, proposal: Proposal, value: Any, member: Member | None) -> Any:
        """This member's share of `q`, checked against the proposal's commitment (None when
        only the input's form is checked: the round stays pending)."""
        if member is None:
            return None
        index, key = member
        return open_query_share(proposal, value, index, key)


TABLE = TableSide()
SIDES: dict[str, TableSide] = {"ensemble": EnsembleSide(), "valuation": ValuationSide()}
"""The kinds that need more than a table map, by name; every other kind is a `TableSide`."""


def node_side(proposal: Proposal) -> TableSide:
    return SIDES.get(proposal.kind, TABLE)
