"""The `JobKind` interface: everything a kind of job decides, in one object per kind.

One machine runs every job (the proposal's common terms, the round in `compute.round`, the
nodes in `nodes/`, settlement on chain); a kind parameterises it, as one Prio3 machine is
parameterised by per-type circuits in the VDAF reference code. A kind decides:

- its **terms** (`terms_model`, held in the proposal's field named after the kind) and its
  **proposal class** (`proposal_class`, one member of the discriminated union on `kind`);
- the parts of a proposal it **fixes** (`fixed`: the map function, the reduce op, the payout
  rule, ...), which a proposal may omit (the kind fills them in) and may not change;
- its **checks** (`problems`), beyond the ones every proposal passes;
- what a provider must hold (`dataset`: a table, or a model) and its **map** at the light node
  (`map_function`, a vetted function of `compute.maps`, or a node-side map for kinds that need
  one, registered in `nodes/kinds.py`);
- its **reduction** and **round configuration** (`reduction`, `round_config`), given the public
  inputs the nodes fetched for it (`public_inputs`: an ensemble's validation labels, a
  forecast's outcomes), and any **late input** the round waits for (`late_input`);
- its **contribution and payout rule** (`payout_rule`, `settle`): integer payouts and slashes
  from the round's outcome;
- its **summary** in the result document and in `bounty result` (`summary`, `describe`), and
  its **template** for `bounty template` (`template`).

Adding a kind is one module in `compute/kinds/` and its line in the registry
(`compute/kinds/__init__.py`); the round changes only for a kind that needs a new phase.
Nothing outside the registry branches on a kind's name (`tests/compute/test_kinds.py`).

Pure: values in, values out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from compute.errors import ComputeError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from compute.messages import RoundConfig, RoundResult
    from compute.proposal import Proposal
    from compute.reduce import Reduction

Problem = tuple[tuple[str | int, ...], str]
"""A refusal: the path of the proposal field to change, and why."""


@dataclass(frozen=True)
class LateInput:
    """A public input the round waits for after the deadline: who may post it (`poster`:
    `buyer`), from when (`after`, the proposal's field of unix seconds) and what it is
    (`model`, a pydantic model). Every committee member must hold the same one (by hash)
    before the round uses it."""

    name: str
    poster: Literal["buyer"]
    after: str
    model: type[BaseModel]


@dataclass(frozen=True)
class Settlement:
    """A kind's payout decision, integers in token base units: what each dataset may claim
    (hex id to amount), what each dataset loses (slashed, within its signed cap), and how much
    of the slashed stake goes to the payouts (the rest is burned)."""

    payouts: Mapping[str, int]
    slashes: Mapping[str, int] = field(default_factory=dict)
    slashed_to_payouts: int = 0
    summary: Mapping[str, Any] = field(default_factory=dict)
    """What the result document says about the rule (scores, factors, caps)."""


class JobKind:
    """One kind of job (see the module docstring). Subclasses set the class attributes and
    override what they decide differently from the defaults here."""

    name: ClassVar[str]
    title: ClassVar[str]
    """One line for `bounty template --help` and `bounty result`."""
    dataset: ClassVar[Literal["table", "model"]] = "table"
    payout_rule: ClassVar[str]
    fixed: ClassVar[Mapping[tuple[str, ...], Any]] = {}
    """Proposal parts the kind fixes, by path (`("reduce", "op")`): filled in when absent."""
    late_input: ClassVar[LateInput | None] = None
    proposal_class: type[Proposal]
    """Set by the registry's module for each kind."""

    # --- the proposal --------------------------------------------------------------------

    def problems(self, proposal: Proposal) -> Sequence[Problem]:
        """The kind's own refusals, beyond every proposal's."""
        return []

    def columns(self, proposal: Proposal) -> tuple[str, ...] | None:
        """The table columns the kind's map reads, when not the map's output fields."""
        return None

    def reduction(self, proposal: Proposal) -> Reduction:
        """The reduce the round runs (by default the proposal's map output and op)."""
        return proposal.generic_reduction()

    def round_config(
        self, proposal: Proposal, job_id: str, inputs: Mapping[str, Any]
    ) -> RoundConfig:
        """What the round's nodes agree on; `inputs` are the kind's public inputs."""
        return proposal.generic_round_config(job_id)

    def public_inputs(self, proposal: Proposal) -> Sequence[str]:
        """Names of the public inputs the nodes fetch for `round_config` before the round."""
        return ()

    def late_after(self, proposal: Proposal) -> int | None:
        """Unix seconds from which the `late_input` may be posted (the value of the proposal's
        field `late_input.after`); None for a kind without a late input."""
        return None

    # --- settlement ------------------------------------------------------------------------

    def settle(
        self,
        proposal: Proposal,
        config: RoundConfig,
        outcome: RoundResult,
        pool: int,
        stakes: Mapping[str, int],
        caps: Mapping[str, int],
    ) -> Settlement | None:
        """Payouts and slashes from the round's outcome, or None for a kind settled by its
        node-side driver (`nodes/kinds.py`). `pool` is what the providers share (the budget
        less the committee's fee), `stakes` each participant's stake and `caps` each one's
        signed slash cap in basis points."""
        return None

    def summary(
        self, proposal: Proposal, config: RoundConfig, outcome: RoundResult
    ) -> Mapping[str, Any]:
        """The kind's part of the result document (beside op, values, count, participants),
        under the kind's name."""
        return {}

    def describe(self, summary: Mapping[str, Any]) -> list[str]:
        """Lines of `bounty result` for the kind's part of a result document."""
        return []

    # --- the buyer's side ------------------------------------------------------------------

    template_options: ClassVar[tuple[str, ...]] = ()
    """The keyword options `template` takes (`bounty template` refuses the others' options)."""
    template_needs: ClassVar[Mapping[str, str]] = {}
    """Options `template` cannot do without, and what the buyer does to get each one."""

    def template(self, **options: Any) -> dict[str, Any]:
        """The kind's parts of its `bounty template --kind NAME` proposal, merged over the
        common parts and the `fixed` ones (`proposal_template`): at least its default
        `title`, and its terms. Raises `MissingOption` for a `template_needs` option."""
        return {}

    def proposal_template(
        self,
        *,
        scheme: str = "shamir",
        min_participants: int = 3,
        title: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The proposal `bounty template --kind NAME` prints, to edit and post: the parts every
        proposal has, the parts the kind fixes, then the kind's `template(**options)` merged
        over them; what `bounty post` fills in (budget, deadline, committee) is left out."""
        for name, hint in self.template_needs.items():
            if options.get(name) is None:
                raise MissingOption(name, hint)
        document: dict[str, Any] = {
            "version": 1,
            "kind": self.name,
            "title": self.title,
            "map": {"function": None, "params": {}, "output": {"fields": []}, "filter": None},
            "reduce": {
                "op": None,
                "scheme": scheme,
                "threshold": None,
                "threat_model": "malicious-detect" if scheme == "shamir" else "semi-honest",
                "bins": None,
            },
            "privacy": {"min_participants": min_participants, "dp": None},
            "economics": {"fee_bps": 1_000, "payout_rule": self.payout_rule, "max_slash_bps": 0},
        }
        for path, value in self.fixed.items():
            _merge(document, _nested(path, value))
        _merge(document, self.template(**options))
        if title is not None:
            document["title"] = title
        return document


class MissingOption(ComputeError, ValueError):
    """A kind's template needs an option that was not given (`JobKind.template_needs`)."""

    def __init__(self, option: str, hint: str) -> None:
        super().__init__(f"the template needs {option}: {hint}")
        self.option, self.hint = option, hint


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: Any = copy.deepcopy(value)
    for key in reversed(path):
        out = {key: out}
    return out


def _merge(into: dict[str, Any], parts: Mapping[str, Any]) -> None:
    """Merge `parts` into `into`, objects key by key (keeping `into`'s key order)."""
    for key, value in parts.items():
        if isinstance(value, Mapping) and value and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
