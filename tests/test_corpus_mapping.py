"""A corpus read as it is: mapped and nested fields, the domain from the path or Hive folders,
Parquet, Hugging Face datasets saved to disk, `grasp check`, and the README's S3 walkthrough
run against the local S3 server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest

from grasp_pipeline.corpus import CorpusError, CorpusMapping, load_documents

from .conftest import TINY, write_user_corpus

README = Path(__file__).resolve().parents[1] / "README.md"
GRASP = str(Path(sys.executable).parent / "grasp")


def flat_records(tmp_path: Path, docs_per_domain: int = 3) -> list[dict]:
    """Records {id, domain, text} of real embedded text under three domains (conftest's user corpus)."""
    path = write_user_corpus(tmp_path / "flat" / "corpus.jsonl", docs_per_domain=docs_per_domain)
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_nested_by_domain(root: Path, records: list[dict]) -> Path:
    """`root/<domain>/part-0.jsonl` with text and id nested and no domain field in the records."""
    for r in records:
        folder = root / r["domain"]
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "part-0.jsonl", "a") as out:
            out.write(json.dumps({"content": {"body": r["text"]}, "meta": {"uid": r["id"]}}) + "\n")
    return root


def as_read(documents: pl.DataFrame) -> list[tuple]:
    return sorted(documents.select("doc_id", "domain", "text").iter_rows())


def test_a_nested_key_jsonl_corpus_with_the_domain_from_the_path_reads_as_its_flat_twin(tmp_path):
    records = flat_records(tmp_path)
    nested = write_nested_by_domain(tmp_path / "nested", records)
    mapping = CorpusMapping(text_field="content.body", id_field="meta.uid", domain_from_path="{domain}/*.jsonl")
    documents, report = load_documents(nested, mapping=mapping)
    flat, _ = load_documents(tmp_path / "flat")
    assert as_read(documents) == as_read(flat)
    assert report.domains == dict(pl.DataFrame(records)["domain"].value_counts().sort("domain").iter_rows())


def test_hive_partition_folders_give_the_domain_of_records_without_it(tmp_path):
    records = flat_records(tmp_path)
    for domain, group in pl.DataFrame(records).group_by("domain"):
        folder = tmp_path / "hive" / "year=2024" / f"lang={domain[0]}"
        folder.mkdir(parents=True)
        group.select(body="text", id="id").write_parquet(folder / "part-0.parquet")
    documents, _ = load_documents(tmp_path / "hive", mapping=CorpusMapping(text_field="body", domain_field="lang"))
    assert as_read(documents) == as_read(load_documents(tmp_path / "flat")[0])


def test_a_parquet_corpus_with_mapped_and_struct_columns_reads_as_its_flat_twin(tmp_path):
    records = pl.DataFrame(flat_records(tmp_path))
    (tmp_path / "pq").mkdir()
    records.select(document="text", metadata=pl.struct(source="domain", uid="id"),
                   embedding=pl.lit([0.5, 0.25])).write_parquet(tmp_path / "pq" / "corpus.parquet")
    mapping = CorpusMapping(text_field="document", domain_field="metadata.source", id_field="metadata.uid")
    documents, _ = load_documents(tmp_path / "pq", mapping=mapping)
    assert as_read(documents) == as_read(load_documents(tmp_path / "flat")[0])


def test_a_hugging_face_dataset_saved_to_disk_reads_with_its_own_field_names(tmp_path):
    datasets = pytest.importorskip("datasets")  # the optional `hf` extra writes it; reading needs only pyarrow
    records = pl.DataFrame(flat_records(tmp_path))
    datasets.Dataset.from_dict({"content": records["text"].to_list(),
                                "meta": [{"source": d} for d in records["domain"]]}).save_to_disk(tmp_path / "hf")
    documents, _ = load_documents(tmp_path / "hf", mapping=CorpusMapping(text_field="content",
                                                                         domain_field="meta.source"))
    read = sorted(documents.select("domain", "text").iter_rows())
    assert read == sorted(records.select("domain", "text").iter_rows())


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_mapping_to_a_field_the_files_lack_is_an_error_naming_the_field_and_the_file(tmp_path, kind):
    records = flat_records(tmp_path)
    if kind == "jsonl":
        corpus = write_nested_by_domain(tmp_path / "nested", records)
        mapping, missing = CorpusMapping(text_field="content.text", domain_from_path="{domain}/*.jsonl"), "content.text"
    else:
        corpus = tmp_path / "corpus.parquet"
        pl.DataFrame(records).select("text", metadata=pl.struct(source="domain")).write_parquet(corpus)
        mapping, missing = CorpusMapping(domain_field="metadata.src"), "metadata.src"
    with pytest.raises(CorpusError, match=rf"(part-0\.jsonl: line 1|corpus\.parquet): missing required "
                                          rf"(field|column) '{re.escape(missing)}'.*corpus\.(text|domain)_field"):
        load_documents(corpus, mapping=mapping)


def test_a_path_that_does_not_match_domain_from_path_is_an_error_naming_the_file_and_the_pattern(tmp_path):
    nested = write_nested_by_domain(tmp_path / "nested", flat_records(tmp_path))
    mapping = CorpusMapping(text_field="content.body", domain_from_path="corpus/{domain}/*.jsonl")
    with pytest.raises(CorpusError, match=r"part-0\.jsonl: its path under the corpus root, '\w+/part-0\.jsonl', "
                                          r"does not match corpus\.domain_from_path = 'corpus/\{domain\}/\*\.jsonl'"):
        load_documents(nested, mapping=mapping)
    with pytest.raises(CorpusError, match=r"corpus\.domain_from_path = '\*\.jsonl': the pattern needs exactly one"):
        CorpusMapping(domain_from_path="*.jsonl")


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def test_grasp_check_prints_per_domain_counts_and_writes_nothing(tmp_path):
    records = flat_records(tmp_path, docs_per_domain=4)
    write_nested_by_domain(tmp_path / "corpus", records)
    config = tmp_path / "my.json"
    config.write_text(json.dumps({**TINY, "corpus": {**TINY["corpus"], "text_field": "content.body",
                                                     "id_field": "meta.uid", "domain_from_path": "{domain}/*.jsonl"}}))
    env = {**os.environ, "GRASP_ROOT": str(tmp_path / "root"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    before = tree(tmp_path)
    command = [GRASP, "check", "--profile", "smoke", "--config", str(config), "--corpus", str(tmp_path / "corpus")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path) == before  # no root, no Dagster home, no MLflow store, no file anywhere under it
    counts = pl.DataFrame(records)["domain"].value_counts()
    for domain, documents in counts.iter_rows():
        row = rf"^{domain}\s+{documents}(\s+\d+){{6}}$"  # documents, then examples, bytes, pool, dev, test, unused
        assert re.search(row, done.stdout, re.M), done.stdout
    assert re.search(rf"^total\s+{len(records)}\s", done.stdout, re.M) and "would leave out" in done.stdout


def test_grasp_check_names_a_bad_setting_and_reads_nothing(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"corpus": {"domain_from_path": "no-placeholder/*.jsonl"}}))
    done = subprocess.run([GRASP, "check", "--config", str(config), "--corpus", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "corpus.domain_from_path" in done.stderr, done.stderr


def readme_s3_walkthrough() -> list[str]:
    """The README's shell block that starts the local S3 server, as lines (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "make s3-local" in b and "grasp check" in b]
    return block.replace("\\\n", " ").splitlines()


def test_the_readme_s3_walkthrough_runs_as_written_against_the_local_s3_server(s3_endpoint, tmp_path):
    lines = readme_s3_walkthrough()
    bucket = f"readme-{uuid.uuid4().hex[:10]}"
    # the servers are the test's own (fixtures), the bucket a fresh one, the commands the README's
    script = "\n".join(line.replace("http://127.0.0.1:9000", s3_endpoint).replace("my-bucket", bucket)
                       .replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
                       for line in lines if not line.startswith(("make ", ".venv/bin/grasp run")))
    (run_line,) = [line for line in lines if line.startswith(".venv/bin/grasp run")]
    assert lines.index(run_line) > next(k for k, line in enumerate(lines) if "export MLFLOW_TRACKING_URI=" in line)
    done = subprocess.run(["bash", "-ec", script], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))})
    assert done.returncode == 0, done.stderr
    _, report = load_documents(None)  # the walkthrough uploads the embedded corpus, one folder per domain
    n = len(report.domains)
    assert f"{n} files, {report.documents} documents, {n} domains" in done.stdout, done.stdout
    for domain, documents in report.domains.items():
        assert re.search(rf"^{domain}\s+{documents}\s", done.stdout, re.M), done.stdout
    assert tree(tmp_path) == {}  # the check wrote nothing locally
    # `grasp run` on that root finds its tracking server in the environment the walkthrough exports
    from grasp_pipeline.infra.tracking import resolve_tracking_uri

    exported = dict(re.findall(r"(\w+)=(\S+)", " ".join(line for line in lines if line.startswith("export "))))
    root = re.search(r"--root (\S+)", run_line)[1]
    assert resolve_tracking_uri("", root, dict(exported)) == exported["MLFLOW_TRACKING_URI"]
