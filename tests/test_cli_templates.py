"""`sessionary templates ...` as a user runs it: a real CLI process against a real server."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import LiveServer, run_cli, server_env
from tests.test_search_listings import DATA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {"SESSIONARY_DATA_DIR": str(tmp_path_factory.mktemp("cli-templates") / "data")}
    key = next(line for line in run_cli(["init"], env).splitlines() if line.startswith("sk_sy_"))
    live = LiveServer(env)
    try:
        yield {"SESSIONARY_BASE_URL": f"{live.base_url}/v1", "SESSIONARY_API_KEY": key}
    finally:
        live.stop()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionary", *args],
        env=server_env(env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def listings() -> list[dict]:  # type: ignore[type-arg]
    return json.loads((DATA / "oslo_listings.json").read_text())[:1200]


def test_import_csv_then_search(
    remote: dict[str, str], listings: list[dict], tmp_path: Path
) -> None:  # type: ignore[type-arg]
    path = tmp_path / "oslo.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(listings[0]))
        writer.writeheader()
        writer.writerows(listings)
    done = cli(
        remote, "templates", "import", str(path), "--name", "oslo", "--batch-size", "500", "--json"
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["record_count"] == 1200
    kinds = {f["key"]: f["kind"] for f in answer["structured_fields"]}
    assert (kinds["price"], kinds["instant_bookable"], kinds["neighbourhood"]) == (
        "number",
        "boolean",
        "categorical",
    )
    assert answer["credits_charged"] > 0
    shown = cli(
        remote,
        "templates",
        "search",
        answer["template_id"],
        "private room in Grünerløkka under 900",
    )
    assert shown.returncode == 0, shown.stderr
    assert '"neighbourhood": "Grünerløkka"' in shown.stdout
    assert '"price": {"max": 900}' in shown.stdout
    assert 'price: {"max": 900} (from query)' in shown.stdout  # each applied filter, and whence
    nothing = cli(
        remote, "templates", "search", answer["template_id"], "hotel room in Marka under 10"
    )
    assert nothing.returncode == 0, nothing.stderr
    assert "Notice: No record meets the filters applied" in nothing.stdout
    found = json.loads(
        cli(
            remote,
            "templates",
            "search",
            answer["template_id"],
            "private room in grunerlokka",
            "--json",
        ).stdout
    )
    assert found["results"]
    assert all(r["record"]["room_type"] == "Private room" for r in found["results"])
    listed = json.loads(cli(remote, "templates", "list", "--json").stdout)
    assert answer["template_id"] in [t["template_id"] for t in listed["templates"]]
    status = cli(remote, "templates", "status", answer["template_id"])
    assert "1200 records (ready)" in status.stdout


def test_import_json_and_jsonl_with_progress(
    remote: dict[str, str], listings: list[dict], tmp_path: Path
) -> None:  # type: ignore[type-arg]
    as_json = tmp_path / "few.json"
    as_json.write_text(json.dumps({"records": listings[:30]}))
    done = cli(remote, "templates", "import", str(as_json), "--batch-size", "10")
    assert done.returncode == 0, done.stderr
    assert "30 records" in done.stdout
    assert "Importing few.json" in done.stdout  # the progress bar
    template = done.stdout.split("Template ")[1].split(":")[0].strip()
    lines = tmp_path / "more.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in listings[30:40]))
    # The template's name (the file's) works wherever its id does.
    added = cli(remote, "templates", "import", str(lines), "--template", "few", "--json")
    assert json.loads(added.stdout) | {"template_id": template} == json.loads(added.stdout)
    assert json.loads(added.stdout)["record_count"] == 40
    assert f"{template}: 40 records" in cli(remote, "templates", "status", "few").stdout
    found = json.loads(cli(remote, "templates", "search", "few", "a flat", "--json").stdout)
    assert found["results"]
    # Piped, the list is tab-separated with every id whole.
    rows = [line.split("\t") for line in cli(remote, "templates", "list").stdout.splitlines()]
    assert rows[0][:2] == ["id", "name"] and [template, "few"] in [r[:2] for r in rows]
    emptied = cli(remote, "templates", "delete", "few")
    assert "Deleted 40 records" in emptied.stdout


def test_template_names_that_are_unknown_or_shared_fail_in_one_line(
    remote: dict[str, str], listings: list[dict], tmp_path: Path
) -> None:  # type: ignore[type-arg]
    path = tmp_path / "twin.json"
    path.write_text(json.dumps(listings[:3]))
    made = [
        json.loads(cli(remote, "templates", "import", str(path), "--json").stdout) for _ in "ab"
    ]
    shared = cli(remote, "templates", "status", "twin")
    assert shared.returncode == 1
    assert "2 templates are named 'twin'" in shared.stderr
    assert all(m["template_id"] in shared.stderr for m in made)
    assert len(shared.stderr.strip().splitlines()) == 1
    unknown = cli(remote, "templates", "search", "nobody", "x")
    assert unknown.returncode == 1
    assert "No template with the id or name 'nobody'" in unknown.stderr


def test_user_errors_are_one_line(remote: dict[str, str], tmp_path: Path) -> None:
    missing = cli(remote, "templates", "import", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1
    assert "No such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "Cannot read" in cli(remote, "templates", "import", str(bad)).stderr
    wrong_key = cli({**remote, "SESSIONARY_API_KEY": "sk_sy_" + "x" * 52}, "templates", "list")
    assert wrong_key.returncode == 1
    assert "401" in wrong_key.stderr
    unknown = cli(remote, "templates", "search", "tmpl_missing", "x")
    assert "404" in unknown.stderr
