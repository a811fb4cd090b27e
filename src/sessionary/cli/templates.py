"""`sessionary templates ...`: import records into a template and search it, on a running server."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sessionary.cli.common import console, fail, print_json
from sessionary.cli.remote import API_KEY_OPTION, BASE_URL_OPTION, Remote

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
        None, "--template", help="Add to this template instead of a new one."
    ),
    batch_size: int = typer.Option(1000, min=1, max=10_000, help="Records per request."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Import a .json, .jsonl or .csv file into a template, in batches."""
    records = read_records(file)
    if not records:
        fail("The file holds no records.")
    remote = Remote(base_url, api_key)
    charged = 0.0
    answer: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=as_json) as progress:
        task = progress.add_task(f"Importing {file.name}", total=len(records))
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            if template is None:
                response = remote.call(
                    "POST",
                    "/chat/create_embedding",
                    json={"name": name or file.stem, "records": batch},
                )
                template = response.json()["template_id"]
            else:
                response = remote.call(
                    "POST",
                    "/chat/update_embedding",
                    json={"template_id": template, "records": batch},
                )
            answer = response.json()
            charged += float(response.headers.get("x-credits-charged", 0))
            progress.advance(task, len(batch))
    remote.close()
    if as_json:
        print_json({**answer, "credits_charged": round(charged, 6)})
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
    template: str,
    query: str,
    limit: int = typer.Option(10, min=1, max=100),
    rerank: bool = typer.Option(False, "--rerank", help="Fuse lexical and vector rankings."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search a template in plain language; shows the results and the filters applied."""
    remote = Remote(base_url, api_key)
    body = {"template_id": template, "search_term": query, "limit": limit, "rerank": rerank}
    answer = remote.call("POST", "/chat/search_against_embedding", json=body).json()
    remote.close()
    if as_json:
        print_json(answer)
        return
    filters = json.dumps(answer["structured_filters"], ensure_ascii=False)
    console.print(f"Filters: {filters}", highlight=False, soft_wrap=True)
    semantic = answer.get("semantic_query") or "(none)"
    console.print(f"Semantic query: {semantic}", highlight=False, soft_wrap=True)
    table = Table("id", "score", "record")
    for result in answer["results"]:
        preview = json.dumps(result.get("record", {}), ensure_ascii=False)
        table.add_row(
            str(result["id"]),
            f"{result['score']:.3f}",
            preview[:90] + ("…" if len(preview) > 90 else ""),
        )
    console.print(table)


@app.command("list")
def list_templates(
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List templates."""
    remote = Remote(base_url, api_key)
    answer = remote.call("GET", "/chat/embedding_templates", params={"limit": 100}).json()
    remote.close()
    if as_json:
        print_json(answer)
        return
    table = Table("id", "name", "records", "status", "updated")
    for row in answer["templates"]:
        table.add_row(
            row["template_id"],
            row.get("name") or "",
            str(row["record_count"]),
            row["status"],
            row["updated_at"],
        )
    console.print(table)


@app.command("status")
def status(
    template: str,
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Whether a template has embeddings, and how many."""
    remote = Remote(base_url, api_key)
    answer = remote.call("GET", "/chat/embedding_status", params={"template_id": template}).json()
    remote.close()
    if as_json:
        print_json(answer)
        return
    console.print(f"{answer['template_id']}: {answer['record_count']} records ({answer['status']})")


@app.command("delete")
def delete(template: str, base_url: str = BASE_URL_OPTION, api_key: str = API_KEY_OPTION) -> None:
    """Remove every record of a template (the template stays, empty)."""
    remote = Remote(base_url, api_key)
    answer = remote.call("POST", "/chat/delete_embeddings", json={"template_id": template}).json()
    remote.close()
    console.print(f"Deleted {answer['deleted_count']} records from {answer['template_id']}.")
