"""`ensemble`: a classifier no worse than any it can buy, from model holders who keep their
models. Each holder scores the public evaluation set with its own model and shares the class
probabilities; the committee fits the weights on the validation rows (whose labels are public)
and releases the weighted ensemble's probabilities for the test rows (whose labels the buyer
keeps); each holder is paid its weight's share. The protocol is `compute.ensemble`; the
evaluation set is fetched by the nodes (`nodes.evalset`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from compute.ensemble import EnsemblePlan, Layout
from compute.errors import ReductionError
from compute.kinds.base import JobKind, Problem
from compute.messages import RoundConfig
from compute.proposal import BlobRef, Proposal, _cross, _Strict
from compute.reduce import Reduction

MAX_ENSEMBLE_VALUES = 2**22
"""Most probabilities one model holder shares: (validation + test rows) x classes."""


class EnsembleSpec(_Strict):
    """The public evaluation set of an `ensemble` job. Each model holder scores its rows with
    its own model and shares the class probabilities; the committee fits the weights on the
    validation rows (whose labels are public) and releases the weighted ensemble's
    probabilities for the test rows (whose labels the buyer keeps)."""

    evaluation: BlobRef
    """An `.npz` of `x_val` (validation rows x features), `y_val` (their labels, 0 .. classes
    - 1) and `x_test` (test rows x features): `nodes.evalset.EvaluationSet`."""
    features: Annotated[int, Field(ge=1, le=2**16)]
    """Feature columns of `x_val` and `x_test`, in the models' input order."""
    classes: Annotated[int, Field(ge=2, le=2**12)]
    validation_rows: Annotated[int, Field(ge=1, le=2**20)]
    test_rows: Annotated[int, Field(ge=1, le=2**20)]

    @model_validator(mode="after")
    def _size(self) -> EnsembleSpec:
        values = (self.validation_rows + self.test_rows) * self.classes
        problem = (
            [
                (
                    ("test_rows",),
                    f"each model would share {values:,} probabilities ((validation_rows + "
                    f"test_rows) x classes); at most {MAX_ENSEMBLE_VALUES:,}",
                )
            ]
            if values > MAX_ENSEMBLE_VALUES
            else []
        )
        _cross(problem, "EnsembleSpec", self.test_rows)
        return self

    @property
    def layout(self) -> Layout:
        return Layout(self.validation_rows, self.test_rows, self.classes)


class Ensemble(JobKind):
    name = "ensemble"
    title = "weighted model outputs: an ensemble of the holders' models, fitted under sharing"
    dataset = "model"
    payout_rule = "ensemble_weight"
    fixed: ClassVar = {
        ("map", "function"): "model_probabilities",
        ("map", "output"): {"fields": []},
        ("reduce", "op"): "weighted_sum",
        ("economics", "payout_rule"): "ensemble_weight",
    }

    def problems(self, proposal: Proposal) -> Sequence[Problem]:
        out: list[Problem] = []
        if proposal.map.filter is not None:
            out.append((("map", "filter"), "an ensemble job scores its evaluation set; no filter"))
        if proposal.economics.max_slash_bps:
            out.append(
                (
                    ("economics", "max_slash_bps"),
                    "an ensemble job slashes nobody (a model no better than chance gets "
                    "weight 0); set it to 0",
                )
            )
        if proposal.privacy.dp is not None:
            out.append(
                (
                    ("privacy", "dp"),
                    "ensemble jobs add no DP noise (the weights are fitted from the "
                    "models' validation statistics, released exactly); remove dp",
                )
            )
        return out

    def reduction(self, proposal: Proposal) -> Reduction:
        """Fixed by the evaluation set's layout (`Layout.reduction`)."""
        return proposal.ensemble.layout.reduction(proposal.reduce.max_values)

    def public_inputs(self, proposal: Proposal) -> Sequence[str]:
        return ("validation_labels",)

    def round_config(
        self, proposal: Proposal, job_id: str, inputs: Mapping[str, Any]
    ) -> RoundConfig:
        """The ensemble round needs the evaluation set's `validation_labels` (the heavy nodes
        fit the weights with them)."""
        labels = inputs.get("validation_labels")
        if labels is None:
            raise ReductionError("an ensemble round needs its validation labels")
        return RoundConfig(
            job_id=job_id,
            reduction=self.reduction(proposal),
            scheme=proposal.scheme(),
            min_participants=proposal.privacy.min_participants,
            ensemble=EnsemblePlan(proposal.ensemble.layout, np.asarray(labels, dtype=np.int64)),
        )

    def describe(self, summary: Mapping[str, Any]) -> list[str]:
        """Each model's weight and validation accuracy and how many probabilities were
        released (not the probabilities: `--json` has them). With the buyer's own test labels
        (`summary["accuracy"]`, from `bounty result --test-labels`), the test accuracies."""
        ensemble = summary.get("ensemble") or {}
        weights = ensemble.get("weights") or {}
        validation = ensemble.get("validation_accuracy") or {}
        values = summary.get("values") or []
        classes, test_rows = ensemble.get("classes"), ensemble.get("test_rows")
        accuracy = summary.get("accuracy")

        def number(value: Any) -> str:
            return f"{value:.4f}" if isinstance(value, int | float) else "-"

        rows = [["dataset", "weight", "validation accuracy", "test accuracy"]]
        rows += [
            [dataset, number(weights.get(dataset)), number(validation.get(dataset)), "-"]
            for dataset in sorted(set(weights) | set(validation))
        ]
        if accuracy is None:
            rows = [r[:3] for r in rows]
        else:
            rows.append(["ensemble (released)", "", number(accuracy["ensemble_validation"]),
                         number(accuracy["ensemble_test"])])  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"weighted ensemble of {len(weights)} models: {classes} classes, {test_rows} "
                 "test rows"]  # fmt: skip
        for row in rows:
            cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
            lines.append(("  " + "  ".join(cells)).rstrip())
        if accuracy is not None:
            lines.append(
                f"ensemble test accuracy {accuracy['ensemble_test']:.4f} on your "
                f"{accuracy['test_labels']} labels; validation accuracy: ensemble "
                f"{number(accuracy['ensemble_validation'])}, best model "
                f"{number(accuracy['best_model_validation'])} (no model's own test outputs "
                "are released)"
            )
        lines.append(
            f"{len(values):,} ensemble probabilities ({test_rows} test rows x {classes} "
            "classes, row by row); --json prints them"
        )
        return lines

    template_options: ClassVar = ("ensemble",)
    template_needs: ClassVar = {
        "ensemble": "publish the evaluation set with `market bounty evaluation FILE.npz "
        "--classes N --json > terms.json`, then pass --ensemble terms.json"
    }

    def template(self, *, ensemble: Mapping[str, Any], **options: Any) -> dict[str, Any]:
        """`ensemble`: the terms `market bounty evaluation` prints (checked as an
        `EnsembleSpec`, kept as given)."""
        EnsembleSpec.model_validate(ensemble)
        return {"title": "A weighted ensemble of providers' models", "ensemble": dict(ensemble)}


ENSEMBLE = Ensemble()


class EnsembleProposal(Proposal):
    kind: Literal["ensemble"]
    ensemble: EnsembleSpec
    """The public evaluation set."""
    job_kind: ClassVar[JobKind] = ENSEMBLE


ENSEMBLE.proposal_class = EnsembleProposal
