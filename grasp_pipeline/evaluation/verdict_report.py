"""The verdict where users look: a Markdown table, a figure, a few named figures and the plain claims.

One reading of a verdict table (`curation_test_verdict` or `validation_verdict`, written by
evaluation/verdict.py) serves every place that shows it: the Dagster asset page and checks, the
MLflow run, `grasp report` and the export. The rows are `summary.verdict_table`'s, so the terminal
summary and these forms never disagree.

`HEADLINES` are the comparisons that decide whether GRASP is worth running: GRASP's selection against
`random_pick` (the loop's procedure with random proposals: the same dev retrainings and pick rule,
DESIGN §7) and GRASP's mixture against RegMix's. A claim holds only when the difference's whole
interval is above zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ..infra.storage import DeltaStore
from .summary import verdict_table

# (method, reference, the claim in words): the rows of kind `difference` the asset checks state
HEADLINES = (("grasp", "random_pick", "grasp selection beats random_pick (equal budget)"),
             ("mixture-grasp", "mixture-regmix", "grasp mixture beats regmix"))


@dataclass(frozen=True)
class Verdict:
    """The verdict rows of one table: `rows` as `summary.verdict_table` shows them (comparison, gain,
    ci_low, ci_high, verdict, p_value, pct_of_random, draws, candidates, dev_retrainings), `raw` the
    table as written, `level` the interval's coverage (0.95)."""

    table: str
    rows: pl.DataFrame
    raw: pl.DataFrame
    level: float

    def markdown(self) -> str:
        """A Markdown table: comparison, gain, interval, ahead/level/behind, candidates, dev retrainings."""
        lines = [f"| comparison | gain | {self.level:.0%} interval | verdict | candidates | dev retrainings |",
                 "|---|---:|---|---|---:|---:|"]
        for row in self.rows.iter_rows(named=True):
            lines.append(f"| {row['comparison']} | {row['gain']:+.4f} | [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] "
                         f"| {_mark(row['verdict'])} | {_count(row['candidates'])} | "
                         f"{_count(row['dev_retrainings'])} |")
        split = self.raw["split"][0] if self.raw.height else ""
        return (f"**{self.table}** ({split} split; gain in utility = −loss, nats per unit; a comparison is "
                f"*ahead* when its whole interval is above zero)\n\n" + "\n".join(lines))

    def figure(self):
        """Gain ± interval per comparison (a matplotlib Figure, not kept by pyplot): ahead green,
        behind red, level grey; the dashed line is zero."""
        from matplotlib.figure import Figure

        rows = self.rows.reverse()  # the first comparison at the top
        colours = {"ahead": "#2a9d55", "behind": "#c0392b", "level": "#7f8c8d"}
        figure = Figure(figsize=(8, 0.45 * rows.height + 1.2), layout="constrained")
        ax = figure.subplots()
        for y, row in enumerate(rows.iter_rows(named=True)):
            ax.errorbar(row["gain"], y, xerr=[[row["gain"] - row["ci_low"]], [row["ci_high"] - row["gain"]]],
                        fmt="o", color=colours[row["verdict"]], capsize=3)
        ax.axvline(0, color="black", linestyle="--", linewidth=0.8)
        ax.set_yticks(range(rows.height), rows["comparison"].to_list(), fontsize=8)
        ax.set_xlabel(f"gain in utility (−loss), {self.level:.0%} interval")
        ax.set_title(self.table, fontsize=9)
        return figure

    def scalars(self) -> dict[str, float | int]:
        """A few named figures: each headline difference's gain and interval, and how many comparisons
        are ahead, level and behind."""
        out: dict[str, float | int] = {}
        for method, reference, _ in HEADLINES:
            row = self.difference(method, reference)
            if row is not None:
                name = f"{method}_vs_{reference}".replace("mixture-", "mixture_")
                out.update({f"{name}.gain": row["gain"], f"{name}.ci_low": row["ci_low"],
                            f"{name}.ci_high": row["ci_high"]})
        counts = dict(self.rows.group_by("verdict").len().iter_rows())
        return {**out, **{f"comparisons_{v}": int(counts.get(v, 0)) for v in ("ahead", "level", "behind")}}

    def difference(self, method: str, reference: str) -> dict | None:
        """The row of kind `difference` of `method` − `reference`, or None when not measured."""
        found = self.raw.filter((pl.col("kind") == "difference") & (pl.col("method") == method)
                                & (pl.col("reference") == reference))
        return found.row(0, named=True) if found.height else None

    def claim(self, method: str, reference: str) -> tuple[bool, dict]:
        """(the difference's interval lies above zero, its figures); not measured = (False, why)."""
        row = self.difference(method, reference)
        if row is None:
            return False, {"measured": False, "why": f"{self.table} has no difference {method} − {reference}: "
                                                     "the run did not measure one of them"}
        facts = {k: row[k] for k in ("gain", "ci_low", "ci_high", "p_value", "candidates", "dev_retrainings",
                                     "seeds", "tasks", "level")}
        verdict = "ahead" if row["ci_low"] > 0 else "behind" if row["ci_high"] < 0 else "level"
        return row["ci_low"] > 0, {"measured": True, "verdict": verdict, **facts}

    def records(self) -> list[dict]:
        """The rows as JSON-ready dicts (NaN → None), with the comparison's two sides."""
        return [{**dict(zip(("method", "reference"), row["comparison"].split(" − "))),
                 **{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}}
                for row in self.rows.iter_rows(named=True)]

    def mixtures(self) -> dict:
        """Which mixture the test supports: the mixture rows with their intervals, `supported` (the
        mixture of highest gain over natural whose interval is above zero; None when none is) and
        `finding`, that in words."""
        rows = [r for r in self.records() if r["method"].startswith("mixture-")]
        ahead = [r for r in rows if r["reference"] == "mixture-natural" and r["verdict"] == "ahead"]
        best = max(ahead, key=lambda r: r["gain"], default=None)
        supported = best["method"].removeprefix("mixture-") if best else None
        finding = (f"the held-out test supports the {supported} mixture: its gain over natural is "
                   f"{best['gain']:+.4f} [{best['ci_low']:+.4f}, {best['ci_high']:+.4f}]" if best else
                   "no mixture's gain over natural has its interval above zero: the held-out test supports none "
                   "over the natural mixture")
        return {"table": self.table, "level": self.level, "supported": supported, "finding": finding, "rows": rows}


def read_verdict(store: DeltaStore, table: str = "curation_test_verdict") -> Verdict | None:
    """The verdict of `table`, or None when it is missing or empty."""
    rows = verdict_table(store, table)
    if rows is None:
        return None
    raw = store.read(table)
    return Verdict(table, rows, raw, float(raw["level"][0]) if "level" in raw.columns else 0.95)


def _mark(verdict: str) -> str:
    return {"ahead": "**ahead** ✅", "behind": "behind ❌"}.get(verdict, "level")


def _count(value) -> str:
    return "–" if value is None else str(value)
