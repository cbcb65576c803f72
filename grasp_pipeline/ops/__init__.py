"""Operations on the stored tables, above the stages: export for trainers, maintenance, reproduce from lineage."""
