"""What a proposal run is asked (:class:`ProposeOptions`) and what it reports (:class:`ProposeSummary`).

One frozen value object instead of twenty keyword arguments: every stage reads the same
options, and the run's parameters are written to the store from it verbatim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import CondsimError
from .registry import REGISTRY, parse_methods

STRATEGIES = ("disagreement", "contrast", "uncertainty", "expected-gold", "audit", "attention", "bridge")
RANKED = ("disagreement", "contrast", "uncertainty", "expected-gold")  # strategies of the priority ranking
RANKS = ("gold", "information")  # what ranks comparisons once calibrated


@dataclass(frozen=True)
class ProposeOptions:
    """Options of one ``propose`` run (see ``condsim-annot propose --help`` for their meaning)."""

    methods: tuple[str, ...] | str | None = None
    budget: int = 100
    per_anchor: int = 5
    audit: float = 0.1
    attention: float = 0.05
    bridge: float = 0.05
    top_k: int = 10
    n_mid: int = 4
    n_random: int = 4
    model: str | None = None
    cross_encoder: str | None = None
    llm_model: str | None = None
    base_url: str | None = None
    seed: int = 0
    cache_dir: str | None = None
    batch_size: int = 64
    dry_run: bool = False
    chain: bool = True  # an anchor's ranked triplets share candidates: (x, y), (y, z), (x, z)
    rank: str = "gold"  # once calibrated: expected new gold per vote, or "information" (of one more vote)
    votes: int = 3  # votes each new triplet will get (what "gold" expects)

    @classmethod
    def from_kwargs(cls, **kw: Any) -> ProposeOptions:
        """Build from keyword arguments; an unknown name is a clear error (not silently ignored)."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(kw) - known)
        if bad:
            raise CondsimError(f"unknown propose option(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        m = kw.get("methods")
        if m is not None and not isinstance(m, str):
            kw["methods"] = tuple(m)
        return cls(**kw)

    def updated(self, **kw: Any) -> ProposeOptions:
        """A copy with some options changed (names checked as in :meth:`from_kwargs`)."""
        if not kw:
            return self
        given = ProposeOptions.from_kwargs(**kw)
        return replace(self, **{k: getattr(given, k) for k in kw})

    def method_names(self) -> list[str]:
        """The requested methods, validated; giving a cross-encoder adds the ``cross-encoder`` method."""
        names = parse_methods(self.methods)
        if self.cross_encoder and "cross-encoder" not in names:
            names.append("cross-encoder")
        return names

    def validate(self) -> list[str]:
        """Raise :class:`CondsimError` naming the bad option; return the method names."""
        names = self.method_names()
        if self.budget < 0:
            raise CondsimError("--budget must be >= 0 (it is the criterion's total number of triplets)")
        if self.per_anchor < 1:
            raise CondsimError("--per-anchor must be >= 1")
        for label, frac in (("--audit", self.audit), ("--attention", self.attention), ("--bridge", self.bridge)):
            if not 0 <= frac <= 1:
                raise CondsimError(f"{label} is a fraction of the budget, between 0 and 1 (got {frac})")
        if self.rank not in RANKS:
            raise CondsimError(f"--rank must be one of {', '.join(RANKS)}, not {self.rank!r}")
        if not 1 <= self.votes <= 5:
            raise CondsimError(f"--votes is the number of votes each new triplet will get, 1 to 5 (got {self.votes})")
        if self.audit + self.attention + self.bridge > 1:
            raise CondsimError("--audit + --attention + --bridge exceed the whole budget")
        if not any(REGISTRY[n].kind == "dense" for n in names):
            raise CondsimError(
                "re-rank methods (cross-encoder, lm-judge) need at least one retrieval method, e.g. embedding or bm25")
        return names

    def method_options(self) -> dict:
        """What the methods read from their context (models, endpoint, batch size, seed)."""
        return {"model": self.model, "cross_encoder": self.cross_encoder, "llm_model": self.llm_model,
                "base_url": self.base_url, "batch_size": self.batch_size, "seed": self.seed}

    def run_params(self) -> dict:
        """The parameters stored with the proposal run."""
        keys = ("budget", "per_anchor", "audit", "attention", "bridge", "top_k", "n_mid", "n_random", "model",
                "cross_encoder", "llm_model", "seed", "chain", "rank", "votes")
        return {k: getattr(self, k) for k in keys}


@dataclass
class ProposeSummary:
    criterion: str
    budget: int
    existing: int
    added: int = 0
    run_id: int | None = None
    by_strategy: dict = field(default_factory=dict)
    methods: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    method_info: dict = field(default_factory=dict)
    anchors: int = 0
    candidates: int = 0
    shortfall: int = 0
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    message: str = ""
    proposals: list | None = None  # dry runs only: what would be written, margins in (x, y) terms
    calibration: dict | None = None  # the calibration run whose model ranked comparisons, if any
    components: dict | None = None  # components of the comparison graph before / after this run
    stale_runs: list = field(default_factory=list)  # runs found dead and marked "interrupted (stale)"

    @property
    def total(self) -> int:
        return self.existing + self.added

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        return d

