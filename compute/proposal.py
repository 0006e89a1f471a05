"""The computation proposal: what a buyer asks the market to compute, content-addressed.

A `Proposal` is a strict pydantic model (unknown fields, wrong types, floats where integers are
due and malformed addresses are refused; `parse_proposal` turns every problem into one line that
names the field's path). Its canonical form is the JSON of `model_dump(mode="json")` with sorted
keys and no spaces (`canonical_bytes`); the keccak-256 of those bytes (`content_hash`) is the
job's `specHash` on chain, and parsing the canonical bytes gives back an equal proposal.

A full example (the JSON shape; `null` where an optional part is absent)::

    {
      "version": 1,
      "kind": "aggregate",
      "title": "Mean systolic blood pressure and age, adults",
      "map": {
        "function": "column_values",
        "params": {},
        "output": {"fields": [
          {"name": "systolic", "lo": 0.0, "hi": 250.0, "scale": 65536},
          {"name": "age", "lo": 0.0, "hi": 250.0, "scale": 65536}
        ]},
        "filter": {"column": "age", "op": ">=", "value": 18}
      },
      "reduce": {"op": "mean", "scheme": "shamir", "threshold": null,
                 "threat_model": "malicious-detect", "bins": null, "max_values": 1000000},
      "privacy": {"min_participants": 3, "dp": {"epsilon": 1.0, "delta": 0.0}},
      "economics": {"budget": 1000000000000000000000, "fee_bps": 500,
                    "payout_rule": "equal", "max_slash_bps": 0},
      "deadline": 1767225600,
      "committee_size": 3,
      "quorum": 2
    }

Rules that span fields (each refusal names the field to change):

- The map function must feed the reduce op (`compute.maps.MAP_FUNCTIONS`): `row_count` feeds
  `count`, `column_values` every other op.
- `count` takes no output fields (it counts rows; fields would suggest bounds that nothing
  uses, so they are refused rather than ignored); every other op needs at least one.
- One `Reduction` has one `FieldSpec` (`compute.reduce`): its bounds and scale apply to every
  coordinate, and the DP sensitivities and headroom check are computed from it. So all output
  fields of a proposal must share `lo`, `hi` and `scale`; fields with different ranges go in
  separate proposals (or are rescaled in a future map function). The reduction's field is that
  shared one, its width the number of fields.
- `histogram` needs `bins` and exactly one output field; `bins` is refused for other ops.
- The kind (`compute.kinds`) decides the rest: the proposal class of each kind is one member
  of the union discriminated on `kind`, with the kind's own terms in the field named after it
  (`ensemble`, `valuation`, ...); the parts a kind fixes (`JobKind.fixed`: its payout rule, and
  for some its map function and reduce op) may be left out and are filled in, and may not be
  changed; and the kind adds its own checks (`JobKind.problems`).
- Sharing: `additive` is n-of-n over the whole committee (at least 2 members; `threshold` may
  only be omitted or equal n). `shamir` is t-of-n with `t = threshold`, by default a strict
  majority `n // 2 + 1`, and never less: a minority of the drawn committee must not read an
  input; `t >= 2` (with `t = 1` each share is the secret itself), so every committee has at
  least 2 members. Heavy node `i` is the `i`-th member of the committee the
  contract draws (ascending address order) and holds evaluation point `i`.
- `threat_model` is declared, not assumed: `malicious-detect` needs `shamir` with
  `n >= t + 1`, so that one wrong partial is detected (named only when `n >= t + 2`).
- `quorum` is a strict majority of the committee (as `Marketplace.sol` checks); a job that may
  slash (`max_slash_bps > 0`) needs a committee of at least 3.
- Headroom: `max_values` records at the fields' bounds and scale must fit the scheme's ring or
  field (`Reduction.check_capacity`). The room DP noise needs is checked by `round_config`,
  which calibrates the noise (OpenDP) and can still raise `EncodingOverflowError`.

Nobody names the committee: the proposal asks for its size and quorum, and the contract draws
the members from the heavy-node registry after the job is posted.

Addresses and keccak-256 are `compute.addresses`; the one-line problems pydantic's errors
become are `compute.problems`; each kind's terms and checks are `compute.kinds`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from compute.addresses import keccak256
from compute.dp import PrivacyTerms, plan_noise
from compute.economics import BPS, MAX_FEE_BPS
from compute.encoding import MAX_VALUES, FieldSpec
from compute.errors import ComputeError
from compute.maps import MAP_FUNCTIONS
from compute.messages import RoundConfig
from compute.problems import _short, describe
from compute.reduce import CLIPPING_OPS, ReduceOp, Reduction
from compute.sharing import Scheme, scheme_named

if TYPE_CHECKING:
    from compute.kinds.base import JobKind


class ProposalError(ComputeError, ValueError):
    """A proposal that cannot be parsed or validated. `str(error)` is one line naming every
    offending field path; `problems` holds the `(path, message)` pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.problems))


# --- field types ---------------------------------------------------------------------------

Op = Literal["sum", "count", "mean", "variance", "histogram", "weighted_sum"]
SchemeName = Literal["additive", "shamir"]
ThreatModel = Literal["semi-honest", "malicious-detect"]
FilterOp = Literal["==", "!=", "<", "<=", ">", ">=", "in"]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

MAX_COMMITTEE = 16
"""`Marketplace.MAX_COMMITTEE`."""
MIN_SLASHING_COMMITTEE = 3
"""Fewest members of a committee that may slash (`Marketplace.MIN_SLASHING_COMMITTEE`)."""
MAX_BINS = 10_000
MAX_FIELDS = 256
MAX_RECORDS = 2**40


def _check_params(params: dict[str, Any]) -> dict[str, Any]:
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"parameter {name!r} must be finite, got {value!r}")
        if not (value is None or isinstance(value, str | bool | int | float)):
            raise ValueError(
                f"parameter {name!r} must be a JSON scalar (string, number, boolean or null)"
            )
    return params


def _short_text(value: str) -> str:
    if not value.strip() or any(ord(c) < 32 for c in value):
        raise ValueError("must be non-blank, on one line")
    return value


class _Strict(BaseModel):
    # Strict: no "3" for 3, no 1.0 for an int, no string for a float (an int is a float).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _cross(problems: list[tuple[tuple[str | int, ...], str]], title: str, value: Any) -> None:
    """Raise the collected cross-field problems as one `ValidationError`, each at its path
    (relative to the model validating, which pydantic prefixes when nesting)."""
    if problems:
        raise ValidationError.from_exception_data(
            title,
            [
                InitErrorDetails(
                    type=PydanticCustomError("proposal", "{message}", {"message": message}),
                    loc=loc,
                    input=value,
                )
                for loc, message in problems
            ],
        )


# --- the parts -----------------------------------------------------------------------------


class FieldBound(_Strict):
    """One numeric output field of the map: a column (for `column_values`), with the bounds
    its values are clipped to and the fixed-point scale they are encoded with."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    """The column read, and the field's name in the result."""
    lo: FiniteFloat
    """Smallest value kept; smaller values are clipped up to it. Part of the DP sensitivity."""
    hi: FiniteFloat
    """Largest value kept (`lo < hi`); larger values are clipped down to it."""
    scale: int = 2**16
    """Fixed-point scale, a power of two: `x` is encoded as `round(clip(x) * scale)`."""

    @field_validator("scale")
    @classmethod
    def _power_of_two(cls, scale: int) -> int:
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two (1, 2, 4, ..., 2**16), got {scale}")
        return scale

    @model_validator(mode="after")
    def _bounds(self) -> FieldBound:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if not self.lo < self.hi:
            problems.append((("hi",), f"must be greater than lo ({self.lo}), got {self.hi}"))
        else:
            try:
                self.spec()
            except ComputeError as error:
                problems.append((("scale",), str(error)))
        _cross(problems, "FieldBound", self.hi)
        return self

    def spec(self) -> FieldSpec:
        return FieldSpec(self.name, self.lo, self.hi, self.scale)


class OutputSpec(_Strict):
    """What one record of the map's output is: its numeric fields, in order."""

    fields: Annotated[list[FieldBound], Field(max_length=MAX_FIELDS)] = []
    """The fields (none for `count`); names are unique."""

    @field_validator("fields")
    @classmethod
    def _unique(cls, fields: list[FieldBound]) -> list[FieldBound]:
        names = [f.name for f in fields]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"field names must be unique; repeated: {', '.join(repeated)}")
        return fields


class FilterSpec(_Strict):
    """Which of the provider's rows the map reads: `column op value`. `in` takes a non-empty
    list of strings or of numbers; `<`, `<=`, `>`, `>=` take a number; `==` and `!=` a string
    or a number. Rows whose filter column is missing never match."""

    column: Annotated[str, Field(min_length=1, max_length=128)]
    op: FilterOp
    value: Any

    @model_validator(mode="after")
    def _value(self) -> FilterSpec:
        message = _filter_value_problem(self.op, self.value)
        _cross([(("value",), message)] if message else [], "FilterSpec", self.value)
        return self


def _filter_value_problem(op: str, value: Any) -> str | None:
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if op == "in":
        if not isinstance(value, list) or not value or len(value) > 1000:
            return "'in' needs a list of 1 to 1000 values"
        if not (all(isinstance(v, str) for v in value) or all(number(v) for v in value)):
            return "'in' needs a list of strings or a list of numbers, not a mix"
        return None
    if op in ("<", "<=", ">", ">="):
        return None if number(value) else f"{op!r} needs a finite number, got {value!r}"
    if isinstance(value, str) or number(value) or isinstance(value, bool):
        return None
    return f"{op!r} needs a string, number or boolean, got {value!r}"


class MapSpec(_Strict):
    """The map: a vetted function run by each provider over its own rows."""

    function: str
    """A name in `compute.maps.MAP_FUNCTIONS` (`column_values`, `row_count`)."""
    params: Annotated[dict[str, Any], AfterValidator(_check_params)] = {}
    """Parameters of the function (JSON scalars); only names it accepts (none so far)."""
    output: OutputSpec
    """The output record's fields, with their clipping bounds."""
    filter: FilterSpec | None = None
    """An optional row filter, applied before the function."""

    @field_validator("function")
    @classmethod
    def _known(cls, function: str) -> str:
        if function not in MAP_FUNCTIONS:
            raise ValueError(
                f"unknown map function {function!r} (vetted: {', '.join(sorted(MAP_FUNCTIONS))})"
            )
        return function

    @model_validator(mode="after")
    def _params(self) -> MapSpec:
        accepted = MAP_FUNCTIONS[self.function].params
        _cross(
            [
                (
                    ("params", name),
                    f"{self.function} takes no parameter {name!r} (it takes: "
                    f"{', '.join(sorted(accepted)) or 'none'})",
                )
                for name in self.params
                if name not in accepted
            ],
            "MapSpec",
            self.params,
        )
        return self


class ReduceSpec(_Strict):
    """The secure reduce: what the committee computes over the providers' contributions."""

    op: Op
    """`sum`, `count`, `mean`, `variance` (population), `histogram`, `weighted_sum`."""
    scheme: SchemeName
    """`additive` (n-of-n over Z_2^64) or `shamir` (t-of-n over GF(2^61 - 1))."""
    threshold: Annotated[int, Field(ge=1, le=MAX_COMMITTEE)] | None = None
    """Shamir's t; `None` for a strict majority of the committee. Additive: `None` or n."""
    threat_model: ThreatModel
    """Declared: `semi-honest`, or `malicious-detect` (a wrong partial is detected)."""
    bins: Annotated[int, Field(ge=1, le=MAX_BINS)] | None = None
    """Histogram only: equal-width bins over the field's `[lo, hi]`."""
    max_values: Annotated[int, Field(ge=1, le=MAX_RECORDS)] = MAX_VALUES
    """Most records summed over all providers together; bounds the headroom check."""


class DPSpec(_Strict):
    """Differential privacy on the release, per record of one provider."""

    epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    delta: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """0 for pure epsilon-DP (discrete Laplace); > 0 for the discrete Gaussian."""


class PrivacySpec(_Strict):
    """Privacy terms: how many datasets must be in a release, and optional DP."""

    min_participants: Annotated[int, Field(ge=1, le=2**32 - 1)]
    """Fewest datasets whose contributions may be reconstructed together."""
    dp: DPSpec | None = None


class EconomicsSpec(_Strict):
    """What the buyer pays, and how it is split (as posted on chain)."""

    budget: Annotated[int, Field(gt=0, le=2**128 - 1)]
    """Escrowed budget in token base units; an integer (floats are refused)."""
    fee_bps: Annotated[int, Field(ge=0, le=MAX_FEE_BPS)]
    """Share of the budget paid to the signing committee, in basis points."""
    payout_rule: str
    """Fixed by the kind (`JobKind.payout_rule`), and filled in when left out."""
    max_slash_bps: Annotated[int, Field(ge=0, le=BPS)] = 0
    """Most of a provider's stake the job may slash, in basis points."""


_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobRef(_Strict):
    """A published blob (the model, the public CKKS context, `Enc(q)`): where to fetch it and
    the SHA-256 its bytes must have (a provider refuses other bytes)."""

    uri: Annotated[str, Field(min_length=1, max_length=4096)]
    sha256: str
    """Lowercase hex SHA-256 of the blob."""
    size: Annotated[int, Field(ge=1, le=2**31)]
    """Its length in bytes (a provider refuses to download more)."""

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise ValueError("must be 64 lowercase hex digits (a SHA-256)")
        return value


class Proposal(_Strict):
    """A computation proposal (see the module docstring for the rules and an example)."""

    version: Literal[1]
    """Format version."""
    kind: str
    """The job's kind (`compute.kinds`): each kind's proposal class narrows it to its name."""
    title: Annotated[str, Field(min_length=1, max_length=120), AfterValidator(_short_text)]
    """A short human title, one line."""
    map: MapSpec
    reduce: ReduceSpec
    privacy: PrivacySpec
    economics: EconomicsSpec
    deadline: Annotated[int, Field(gt=0, le=2**64 - 1)]
    """Unix seconds after which submissions close."""
    committee_size: Annotated[int, Field(ge=1, le=MAX_COMMITTEE)]
    """Members the contract draws for the job; node `i` is the `i`-th in ascending order."""
    quorum: Annotated[int, Field(ge=1)]
    """Signatures needed to finalize or abort: a strict majority of the committee."""

    job_kind: ClassVar[JobKind]
    """The kind's decisions (`compute.kinds.base.JobKind`); set on each kind's proposal class."""

    @model_validator(mode="before")
    @classmethod
    def _fill_fixed(cls, data: Any) -> Any:
        """The parts the kind fixes, filled in where the proposal leaves them out."""
        kind = cls.__dict__.get("job_kind")
        if kind is None or not isinstance(data, dict):
            return data
        data = dict(data)
        for path, value in kind.fixed.items():
            node = data
            for part in path[:-1]:
                child = node.get(part)
                if not isinstance(child, dict):
                    break
                node[part] = child = dict(child)
                node = child
            else:
                node.setdefault(path[-1], value)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Proposal:
        _cross(self._problems(), "Proposal", None)
        return self

    def _problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        out: list[tuple[tuple[str | int, ...], str]] = []
        n = self.committee_size
        op, fields = self.reduce.op, self.map.output.fields
        if not (2 * self.quorum > n and self.quorum <= n):
            out.append(
                (
                    ("quorum",),
                    f"{self.quorum} is not a strict majority of the {n}-member committee "
                    f"(use {n // 2 + 1} to {n})",
                )
            )
        if self.economics.max_slash_bps and n < MIN_SLASHING_COMMITTEE:
            out.append(
                (
                    ("committee_size",),
                    f"a job that may slash (max_slash_bps > 0) needs a committee of at least "
                    f"{MIN_SLASHING_COMMITTEE} (as Marketplace.sol checks); {n} is too few",
                )
            )
        function = MAP_FUNCTIONS[self.map.function]
        if ReduceOp(op) not in function.ops:
            feeds = ", ".join(sorted(function.ops))
            out.append(
                (
                    ("map", "function"),
                    f"{function.name} cannot feed op {op!r} (it feeds: {feeds})",
                )
            )
        if op == "count" and fields:
            out.append(
                (
                    ("map", "output", "fields"),
                    "op 'count' counts rows and takes no output fields; remove them",
                )
            )
        elif self.map.function == "model_probabilities" and fields:
            out.append(
                (
                    ("map", "output", "fields"),
                    "model_probabilities shares a model's probabilities on the evaluation set "
                    "and takes no output fields; remove them",
                )
            )
        elif function.reads_fields and not fields:
            out.append((("map", "output", "fields"), f"op {op!r} needs at least one field"))
        if op == "histogram":
            if self.reduce.bins is None:
                out.append((("reduce", "bins"), f"a histogram needs bins (1 to {MAX_BINS})"))
            if len(fields) > 1:
                out.append(
                    (
                        ("map", "output", "fields"),
                        f"a histogram is over exactly one field, got {len(fields)}",
                    )
                )
        elif self.reduce.bins is not None:
            out.append((("reduce", "bins"), f"bins apply only to op 'histogram', not {op!r}"))
        if fields:
            first = fields[0]
            for index, other in enumerate(fields[1:], start=1):
                if (other.lo, other.hi, other.scale) != (first.lo, first.hi, first.scale):
                    out.append(
                        (
                            ("map", "output", "fields", index),
                            f"field {other.name!r} has [{other.lo}, {other.hi}] at scale "
                            f"{other.scale} but {first.name!r} has [{first.lo}, {first.hi}] at "
                            f"scale {first.scale}; all fields of a proposal share lo, hi and "
                            "scale (one reduction has one field spec)",
                        )
                    )
        kind = self.job_kind
        for path, value in kind.fixed.items():
            given: Any = self
            for part in path:
                given = getattr(given, part)
            if isinstance(given, BaseModel):
                given = given.model_dump(mode="json")
            if given != value:
                out.append((path, f"kind {kind.name!r} fixes this to {value!r}; leave it out"))
        out += kind.problems(self)
        out += self._sharing_problems(n)
        if not out:
            try:
                self.reduction().check_capacity(self.scheme().capacity)
            except ComputeError as error:
                loc = ("map", "output", "fields") if fields else ("reduce", "max_values")
                out.append((loc, str(error)))
        return out

    def _sharing_problems(self, n: int) -> list[tuple[tuple[str | int, ...], str]]:
        reduce = self.reduce
        if reduce.scheme == "additive":
            if n < 2:
                return [(("committee_size",), "additive sharing needs at least 2 members")]
            if reduce.threshold not in (None, n):
                return [
                    (
                        ("reduce", "threshold"),
                        f"additive sharing is {n}-of-{n}; omit threshold or set it to {n}",
                    )
                ]
            if reduce.threat_model == "malicious-detect":
                return [
                    (
                        ("reduce", "threat_model"),
                        "'malicious-detect' needs scheme 'shamir' (a wrong additive share goes "
                        "unnoticed)",
                    )
                ]
            return []
        t = self.threshold
        default = " (the default, a majority)" if reduce.threshold is None else ""
        if t > n:
            return [(("reduce", "threshold"), f"{t} exceeds the committee's {n} members")]
        if t < 2:
            return [
                (
                    ("reduce", "threshold"),
                    f"{t}{default} would let one heavy node read every input; use at least 2 "
                    "(with at least 2 committee members)",
                )
            ]
        if 2 * t <= n:
            return [
                (
                    ("reduce", "threshold"),
                    f"{t}-of-{n} Shamir lets a minority of the drawn committee ({t} of {n}) "
                    f"read every input; use at least {n // 2 + 1} (a majority), or omit it",
                )
            ]
        if reduce.threat_model == "malicious-detect" and n < t + 1:
            return [
                (
                    ("reduce", "threat_model"),
                    f"'malicious-detect' needs n >= t + 1 committee members to detect a wrong "
                    f"partial; {t}-of-{n} Shamir{default} has no redundancy",
                )
            ]
        return []

    # --- derived ---------------------------------------------------------------------------

    @property
    def threshold(self) -> int:
        """The sharing threshold in force: n for additive, Shamir's t (majority by default)."""
        n = self.committee_size
        if self.reduce.scheme == "additive":
            return n
        return self.reduce.threshold if self.reduce.threshold is not None else n // 2 + 1

    def field_spec(self) -> FieldSpec:
        """The one field spec of the reduction (a unit placeholder for `count`)."""
        fields = self.map.output.fields
        if not fields:
            return FieldSpec("rows", 0.0, 1.0, scale=1)
        first = fields[0]
        name = ",".join(f.name for f in fields)
        return FieldSpec(name, first.lo, first.hi, first.scale)

    def reduction(self) -> Reduction:
        """The reduce as `compute.reduce` runs it, as the kind decides (`JobKind.reduction`)."""
        return self.job_kind.reduction(self)

    def generic_reduction(self) -> Reduction:
        """The reduce of the map's output fields under the proposal's op: op, field spec,
        width, bins, max_values. An op that clips also counts, under sharing, the values outside
        the fields' bounds (`Reduction.count_clipped`): the result reports that total, never a
        provider's own."""
        fields = self.map.output.fields
        op = ReduceOp(self.reduce.op)
        return Reduction(
            op,
            self.field_spec(),
            width=max(len(fields), 1),
            bins=self.reduce.bins or 0,
            max_values=self.reduce.max_values,
            count_clipped=op in CLIPPING_OPS and not MAP_FUNCTIONS[self.map.function].in_bounds,
        )

    def scheme(self) -> Scheme:
        """The sharing scheme over the committee (n = its size)."""
        threshold = None if self.reduce.scheme == "additive" else self.threshold
        return scheme_named(self.reduce.scheme, n=self.committee_size, threshold=threshold)

    def privacy_terms(self) -> PrivacyTerms | None:
        """The DP terms, when the proposal asks for DP."""
        dp = self.privacy.dp
        return None if dp is None else PrivacyTerms(dp.epsilon, dp.delta)

    def round_config(self, job_id: str, **inputs: Any) -> RoundConfig:
        """What the round's nodes agree on, as the kind decides (`JobKind.round_config`), given
        the kind's public inputs (an ensemble's `validation_labels`). With DP the noise is
        calibrated here (OpenDP); raises `EncodingOverflowError` when the noise leaves no
        headroom, and `ReductionError` when an input the kind needs is missing."""
        return self.job_kind.round_config(self, job_id, inputs)

    def generic_round_config(self, job_id: str) -> RoundConfig:
        """The round of the generic reduction, with the proposal's DP terms."""
        reduction = self.reduction()
        terms = self.privacy_terms()
        return RoundConfig(
            job_id=job_id,
            reduction=reduction,
            scheme=self.scheme(),
            min_participants=self.privacy.min_participants,
            privacy=None if terms is None else plan_noise(reduction, terms),
        )

    # --- canonical form --------------------------------------------------------------------

    def canonical_bytes(self) -> bytes:
        """`model_dump(mode="json")` as JSON with sorted keys, no spaces and non-ASCII characters
        escaped (`\\uXXXX`), so the bytes are ASCII; the same settings as
        `market.escrow.documents.canonical_json`. What `content_hash` hashes."""
        return json.dumps(
            self.model_dump(mode="json"),
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        ).encode()

    def content_hash(self) -> bytes:
        """keccak-256 of `canonical_bytes()`: the job's `specHash` on chain (32 bytes)."""
        return keccak256(self.canonical_bytes())


# --- parsing and error messages ------------------------------------------------------------


def parse_proposal(raw: bytes | str | Mapping[str, Any]) -> Proposal:
    """A validated proposal of its kind's class (`compute.kinds`: the union discriminated on
    `kind`) from JSON (bytes or text) or an already decoded dict. Raises `ProposalError` with
    one line naming each offending field path."""
    from compute.kinds import KINDS

    try:
        data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    except ValueError as error:
        raise ProposalError([("proposal", f"not valid JSON ({error})")]) from None
    name = data.get("kind") if isinstance(data, Mapping) else None
    if not isinstance(data, Mapping):
        raise ProposalError([("proposal", "must be an object (the proposal's fields)")])
    if name not in KINDS:
        known = ", ".join(KINDS)
        problem = "required field missing" if name is None else f"unknown kind {_short(name)}"
        raise ProposalError([("kind", f"{problem} (use {known})")])
    model = KINDS[name].proposal_class
    try:
        if isinstance(raw, bytes | str):
            return model.model_validate_json(raw)
        return model.model_validate(dict(raw))
    except ValidationError as error:
        problems = [
            (path, f"{path} terms apply only to kind {path!r}, not {name!r}")
            if path in KINDS and message.startswith("unknown field")
            else (path, message)
            for path, message in describe(error, model)
        ]
        raise ProposalError(problems) from None
