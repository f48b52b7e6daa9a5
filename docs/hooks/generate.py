"""Build-time pages for the docs: facts that drift are read from the code, never written twice.

mkdocs runs this hook (``hooks:`` in mkdocs.yml). It adds generated pages to the site without writing into
the source tree:

- ``reference/stages.md``: every stage of the registry (``malle.lab.stages.registry.STAGES``) with its cache
  folder, version, parameters and files, read from each stage module's docstring;
- ``reference/cli.md``: every subcommand of ``malle`` (``malle.cli``) with its ``--help``;
- ``reference/http-api.md`` and ``reference/openapi.json``: the service's OpenAPI schema, from
  ``malle.service.app.create_app`` over an empty bank in a temporary folder.

Pages may also hold the marker ``<!-- generated: stage-folders -->``, replaced by the list of cache folders.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARKER = re.compile(r"<!--\s*generated:\s*([a-z-]+)\s*-->")
_cache: dict[str, str] = {}


# ---------------------------------------------------------------- stages


def _stage_rows() -> list[dict]:
    from malle.lab.stages.registry import STAGES

    rows = []
    for kind, stage in STAGES.items():
        plain = getattr(stage, "plain", stage)
        module = sys.modules[type(plain).__module__]
        doc = inspect.getdoc(module) or ""
        first = doc.split("\n\n")[0].replace("\n", " ")
        first = re.sub(r"^Stage ``[a-z]+``:\s*", "", first)
        folder = re.search(r"Folder:\s*``(.+?)``", doc, re.S)
        if folder:
            files = " ".join(f"`{f}`" for f in folder.group(1).split())
        else:
            files = "none: only its meta in `done.json`"
        derived = type(getattr(stage, "derived", None)).__name__
        tricks = stage is not plain and not derived.startswith("NotFor")
        rows.append({"kind": kind, "version": getattr(stage, "version", ""),
                     "params": ", ".join(getattr(stage, "params", ()) or ()) or "—",
                     "derived": tricks, "files": files, "what": first,
                     "module": module.__name__})
    return rows


def stage_folders() -> str:
    rows = _stage_rows()
    return (f"{len(rows)} stage folders, one per stage kind of `malle.lab.stages.registry.STAGES`: "
            + ", ".join(f"`{r['kind']}/`" for r in rows) + ".")


def stages_page() -> str:
    rows = _stage_rows()
    out = ["# Stages (generated)", "",
           "Generated at build time from `malle.lab.stages.registry.STAGES` and each stage module's docstring. "
           "A stage's kind is its cache folder: `<cache>/<kind>/<key>/`. See "
           "[Stage graph](../concepts/stage-graph.md) and [Cache guarantees](../concepts/cache.md).", "",
           f"The registry holds **{len(rows)} stages**, in the order a run needs them.", "",
           "| kind (cache folder) | version | one instance per | files | what it is | module |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        kind = f"`{r['kind']}/`" + (" (also `METHOD+trick`)" if r["derived"] else "")
        out.append(f"| {kind} | {r['version']} | {r['params']} | {r['files']} | {r['what']} | `{r['module']}` |")
    out += ["", "Every folder also holds `done.json`, written last, with each file's size and SHA-256 and the "
            "stage's meta. Beside the stage folders the cache keeps `models/` (exported and calibrated "
            "networks) and `replays/` (attribution's replayed chains)."]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- CLI


def _subparsers(parser: argparse.ArgumentParser) -> tuple[dict, dict]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            return action.choices, helps
    raise RuntimeError("malle.cli.build_parser() has no subcommands")


def cli_page() -> str:
    os.environ["COLUMNS"] = "100"
    from malle import cli

    parser = cli.build_parser()
    parser.prog = "malle"
    choices, helps = _subparsers(parser)
    names = [getattr(c, "NAME", None) for c in getattr(cli, "COMMANDS", ())]
    names = [n for n in names if n in choices] or list(choices)
    out = ["# Command line reference (generated)", "",
           "Generated at build time from `malle.cli` (`COMMANDS` and each subcommand's `add_arguments`), so it "
           "lists exactly what the installed `malle` accepts. The [CLI guide](../guides/cli.md) explains the "
           "options in prose.", "",
           f"`malle` has **{len(names)} subcommands**; `python -m malle` is the same command.", "",
           "| command | what it does |", "|---|---|"]
    out += [f"| [`malle {n}`](#malle-{n}) | {helps.get(n) or ''} |" for n in names]
    for n in names:
        sub = choices[n]
        sub.prog = f"malle {n}"
        out += ["", f"## malle {n}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(out) + "\n"


def cli_commands() -> str:
    from malle import cli

    parser = cli.build_parser()
    choices, helps = _subparsers(parser)
    names = [getattr(c, "NAME", None) for c in getattr(cli, "COMMANDS", ())]
    names = [n for n in names if n in choices] or list(choices)
    return "\n".join(f"- `malle {n}`: {helps.get(n) or ''}" for n in names) + "\n"


# ---------------------------------------------------------------- HTTP API


def openapi_schema() -> dict:
    if "openapi" not in _cache:
        from malle.bank import Bank

        try:
            from malle.service.app import create_app
        except ImportError as err:
            raise RuntimeError(f"the HTTP API page needs the service extra: pip install -e '.[service,docs]' ({err})")

        with tempfile.TemporaryDirectory(prefix="malle-docs-bank-") as tmp:
            bank = Bank.open(Path(tmp) / "bank")
            try:
                schema = create_app(bank).openapi()
            finally:
                bank.close()
        _cache["openapi"] = json.dumps(schema, indent=2, sort_keys=False)
    return json.loads(_cache["openapi"])


def _schema_name(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) for s in schema["anyOf"])
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {_schema_name(schema.get('items', {}))}"
    return kind or "any"


def http_page() -> str:
    schema = openapi_schema()
    info = schema.get("info", {})
    out = ["# HTTP API (generated)", "",
           f"Generated at build time from the OpenAPI schema of `malle.service.app.create_app` "
           f"({info.get('title', '')}, API version {info.get('version', '')}, OpenAPI {schema.get('openapi', '')}). "
           "The schema itself: [openapi.json](openapi.json). A running `malle serve` also serves it at "
           "`/openapi.json` and draws it at `/docs`. The [Bank and service guide](../guides/bank-and-service.md) "
           "explains the routes in prose.", "",
           "Every status a route can answer is in the schema with its body: errors are `Error` objects "
           "(`error`, a stable `code`, `request_id`); the [service contract](../guides/service-contract.md) "
           "lists the codes, the quality verdict, lookups by hash and flood control.", ""]
    if info.get("description"):
        out += [info["description"], ""]
    out += ["| method | path | summary | responses |", "|---|---|---|---|"]
    details = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            if method.startswith("x-") or not isinstance(op, dict):
                continue
            codes = ", ".join(sorted(op.get("responses", {})))
            summary = op.get("summary", "")
            out.append(f"| `{method.upper()}` | `{path}` | {summary} | {codes} |")
            details += ["", f"## `{method.upper()} {path}`", ""]
            if op.get("description"):
                details += [op["description"].strip(), ""]
            params = op.get("parameters", [])
            if params:
                details += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
                for p in params:
                    s = p.get("schema", {})
                    notes = ", ".join(f"{k} {s[k]}" for k in ("minimum", "maximum", "default") if k in s)
                    details.append(f"| `{p['name']}` | {p.get('in', '')} | {_schema_name(s)} | "
                                   f"{'yes' if p.get('required') else 'no'} | {notes} |")
                details.append("")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                details.append(f"Request body: `{media}`, {_schema_name(content.get('schema', {}))}.")
                details.append("")
            details += ["| status | meaning |", "|---|---|"]
            for code, resp in sorted(op.get("responses", {}).items()):
                details.append(f"| {code} | {resp.get('description', '')} |")
    schemas = schema.get("components", {}).get("schemas", {})
    tail = []
    if schemas:
        tail += ["", "## Schemas", ""]
        for name, s in schemas.items():
            props = s.get("properties", {})
            required = set(s.get("required", ()))
            tail += [f"### {name}", ""]
            if props:
                tail += ["| field | type | required |", "|---|---|---|"]
                tail += [f"| `{k}` | {_schema_name(v)} | {'yes' if k in required else 'no'} |"
                         for k, v in props.items()]
            else:
                tail.append(f"Type: {_schema_name(s)}.")
            tail.append("")
    return "\n".join(out + details + tail) + "\n"


# ---------------------------------------------------------------- mkdocs events

GENERATED = {
    "reference/stages.md": stages_page,
    "reference/cli.md": cli_page,
    "reference/http-api.md": http_page,
}
SNIPPETS = {"stage-folders": stage_folders, "cli-commands": cli_commands}


def on_files(files, config):
    for uri, make in GENERATED.items():
        files.append(File.generated(config, uri, content=make()))
    openapi_schema()
    files.append(File.generated(config, "reference/openapi.json", content=_cache["openapi"] + "\n"))
    return files


def on_page_markdown(markdown, page, config, files):
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in SNIPPETS:
            raise ValueError(f"{page.file.src_uri}: unknown generated snippet {name!r}")
        if name not in _cache:
            _cache[name] = SNIPPETS[name]()
        return _cache[name]

    return MARKER.sub(replace, markdown)
