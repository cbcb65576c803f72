"""The catalog: every Delta table under the storage root is a Dagster asset named like the table.

A stage is one op, named like the stage: its module here and in `grasp_pipeline/stages/`, and
its run function `run_<stage>`. Which tables it writes and reads, and their descriptions, are
declared once, in the library's stage record (`grasp_pipeline.stages.registry.STAGES`);
`STAGE_TABLES` and `TABLE_DESCRIPTIONS` are views of it; every asset's columns and their
descriptions come from `grasp_pipeline/stages/columns.py`. `stage_asset` turns a stage function
into a multi-asset with one asset per table, so the UI lists `task_sets`, `fidelity_report` or
`surrogate_candidates` like any other table, each with its own row count, schema, Delta version
and staleness. A stage that writes files, not tables (`trainer_export`), is one asset named like
itself. Run config keeps its shape: `ops: {<stage>: {config: …}}`.

`lineage` is appended to by every stage: it is an external asset (`LINEAGE_SPEC`) whose
new versions each stage reports as materialisations.

Every asset downstream of the corpus carries `AutomationCondition.eager()`, evaluated by
the `grasp_automation` sensor (assets/sensors.py, off by default): when its inputs change,
it is brought up to date, partitions included; a stage run on demand (`mixture_update`) is not.
"""

from __future__ import annotations

import dagster as dg

from grasp_pipeline.infra.storage import CONTRACT
from grasp_pipeline.stages import STAGE, STAGES
from grasp_pipeline.stages.columns import TABLE_COLUMNS, column_description

# stage (op) -> the assets it writes, primary first (the stage's figures and metrics go there)
STAGE_TABLES: dict[str, list[str]] = {stage.name: stage.tables or [stage.name] for stage in STAGES}
TABLE_DESCRIPTIONS: dict[str, str] = {table: text for stage in STAGES for table, text in stage.writes}



def column_schema(table: str, types: dict[str, str] | None = None) -> dg.TableSchema:
    """The table's columns with their descriptions (grasp_pipeline/stages/columns.py): of `types`
    ({column: type} as written) when given, else the declared columns with the contract's types."""
    if types is None:
        contract = CONTRACT.get(table, {})
        types = {c: str(contract[c]) if c in contract else "any" for c in TABLE_COLUMNS.get(table, {})}
    return dg.TableSchema(columns=[dg.TableColumn(name, kind, description=column_description(table, name) or None)
                                   for name, kind in types.items()])


LINEAGE_SPEC = dg.AssetSpec(
    "lineage", group_name="catalog", kinds={"deltalake"}, code_version="1",
    metadata={"dagster/column_schema": column_schema("lineage")},
    description="One row per table version written: the versions read, Dagster and MLflow runs, code version, "
                "parameters (`grasp lineage ID` walks it). Appended to by every stage.")


def tables_of(stage: str) -> list[str]:
    """The tables `stage` writes (its assets), primary first."""
    return STAGE_TABLES[stage]


def stage_of(table: str) -> str:
    """The stage (op) that writes `table`; `table` itself for an asset no stage writes (`lineage`)."""
    for stage, tables in STAGE_TABLES.items():
        if table in tables:
            return stage
    return table


def asset_keys(stages: list[str]) -> list[dg.AssetKey]:
    """The asset keys (tables) the stages write, in order."""
    return [dg.AssetKey(table) for stage in stages for table in tables_of(stage)]


def stage_asset(stage: str, *, code_version: str, group_name: str, kinds: set[str], **multi_asset_kwargs):
    """Decorates a stage function as a multi-asset named `stage` with one asset per table it writes.

    The tables the stage reads (its record's `reads`) are each asset's deps. Every asset with
    inputs is automated with `AutomationCondition.eager()` unless the stage runs on demand (its
    input is not a table). Other keywords go to `dg.multi_asset` (pool, partitions_def,
    backfill_policy, ...).
    """
    record = STAGE[stage]
    reads = list(record.reads)
    automation = dg.AutomationCondition.eager() if reads and not record.on_demand else None

    def decorate(fn):
        specs = [dg.AssetSpec(table, deps=reads, description=TABLE_DESCRIPTIONS.get(table) or fn.__doc__,
                              group_name=group_name, code_version=code_version, kinds=kinds,
                              automation_condition=automation,
                              metadata={"grasp/stage": stage, **({"dagster/column_schema": column_schema(table)}
                                                                 if table in TABLE_COLUMNS else {})})
                 for table in tables_of(stage)]
        return dg.multi_asset(name=stage, specs=specs, description=fn.__doc__, **multi_asset_kwargs)(fn)

    return decorate
