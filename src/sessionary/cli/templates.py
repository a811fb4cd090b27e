"""`sessionary templates ...`: import records into a template and search it, on a running server."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sessionary.cli.common import console, fail, print_json, print_table
from sessionary.cli.remote import (
    API_KEY_OPTION,
    BASE_URL_OPTION,
    JSON_OPTION,
    remote,
    resolve_template,
)

app = typer.Typer(help="Embedding templates on a running server.")


def _cell(value: str) -> Any:
    """CSV cells as JSON values: numbers, booleans and empties recognised."""
    text = value.strip()
    if text == "":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return value


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        fail(f"No such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if suffix == ".csv":
            with path.open(newline="") as handle:
                return [
                    {k: _cell(v or "") for k, v in row.items()} for row in csv.DictReader(handle)
                ]
        if suffix == ".json":
            data = json.loads(path.read_text())
            records = data.get("records") if isinstance(data, dict) else data
            if not isinstance(records, list):
                fail('A .json file holds an array of records (or {"records": [...]}).')
            return records
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        fail(f"Cannot read {path}: {exc}")
    fail(f"Unsupported file type '{suffix}': use .json, .jsonl or .csv.")


@app.command("import")
def import_records(
    file: Path,
    name: str = typer.Option(None, "--name", help="Template name (default: the file's name)."),
    template: str = typer.Option(
        None, "--template", help="Add to this template (id, or its name when unique)."
    ),
    batch_size: int = typer.Option(1000, min=1, max=10_000, help="Records per request."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Import a .json, .jsonl or .csv file into a template, in batches."""
    records = read_records(file)
    if not records:
        fail("The file holds no records.")
    charged = Decimal(0)
    answer: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with (
        remote(base_url, api_key) as client,
        Progress(*columns, console=console, disable=as_json) as progress,
    ):
        if template is not None:
            template = resolve_template(client, template)
        task = progress.add_task(f"Importing {file.name}", total=len(records))
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            if template is None:
                result = client.create_embedding(batch, name=name or file.stem)
                template = result.data.template_id
            else:
                result = client.update_embedding(template, batch)
            answer = result.data.model_dump(mode="json")
            charged += result.credits_charged or 0
            progress.advance(task, len(batch))
    if as_json:
        print_json({**answer, "credits_charged": float(charged)})
        return
    console.print(
        f"Template [bold]{template}[/bold]: {answer['record_count']} records, {charged:g} credits."
    )
    fields = ", ".join(
        f"{f['key']} ({f.get('kind', f['type'])})" for f in answer["structured_fields"]
    )
    console.print(f"Filterable: {fields or 'none'}", highlight=False)
    console.print(
        f"Free text: {', '.join(answer['unstructured_fields']) or 'none'}", highlight=False
    )


@app.command("search")
def search(
    template: str = typer.Argument(..., help="Template id, or its name when unique."),
    query: str = typer.Argument(..., help="What to look for, in plain language."),
    limit: int = typer.Option(10, min=1, max=100),
    rerank: bool = typer.Option(False, "--rerank", help="Fuse lexical and vector rankings."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Search a template in plain language; shows the results and the filters applied."""
    with remote(base_url, api_key) as client:
        template_id = resolve_template(client, template)
        found = client.search_against_embedding(template_id, query, limit=limit, rerank=rerank)
    answer = found.data.model_dump(mode="json")
    if as_json:
        print_json(answer)
        return
    filters = json.dumps(answer["structured_filters"], ensure_ascii=False)
    console.print(f"Filters: {filters}", highlight=False, soft_wrap=True)
    for applied in answer.get("applied_filters") or []:
        condition = json.dumps(applied.get("condition"), ensure_ascii=False)
        console.print(
            f"  {applied['field']}: {condition} (from {applied.get('source', 'query')})",
            highlight=False,
            soft_wrap=True,
        )
    semantic = answer.get("semantic_query") or "(none)"
    console.print(f"Semantic query: {semantic}", highlight=False, soft_wrap=True)
    if answer.get("notice"):
        console.print(f"Notice: {answer['notice']}", highlight=False, soft_wrap=True)
    rows = []
    for result in answer["results"]:
        preview = json.dumps(result.get("record") or {}, ensure_ascii=False)
        rows.append(
            (
                result["id"],
                f"{result['score']:.3f}",
                preview[:90] + ("…" if len(preview) > 90 else ""),
            )
        )
    print_table(("id", "score", "record"), rows)


@app.command("list")
def list_templates(
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List templates."""
    with remote(base_url, api_key) as client:
        answer = client.list_embedding_templates(limit=100).data.model_dump(mode="json")
    if as_json:
        print_json(answer)
        return
    print_table(
        ("id", "name", "records", "status", "updated"),
        [
            (r["template_id"], r.get("name"), r["record_count"], r["status"], r["updated_at"])
            for r in answer["templates"]
        ],
    )


@app.command("status")
def status(
    template: str = typer.Argument(..., help="Template id, or its name when unique."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Whether a template has embeddings, and how many."""
    with remote(base_url, api_key) as client:
        template_id = resolve_template(client, template)
        answer = client.get_embedding_status(template_id).data.model_dump(mode="json")
    if as_json:
        print_json(answer)
        return
    console.print(f"{answer['template_id']}: {answer['record_count']} records ({answer['status']})")


@app.command("delete")
def delete(
    template: str = typer.Argument(..., help="Template id, or its name when unique."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Remove every record of a template (the template stays, empty)."""
    with remote(base_url, api_key) as client:
        template_id = resolve_template(client, template)
        answer = client.delete_embeddings(template_id).data.model_dump(mode="json")
    if as_json:
        print_json(answer)
        return
    console.print(f"Deleted {answer['deleted_count']} records from {answer['template_id']}.")
