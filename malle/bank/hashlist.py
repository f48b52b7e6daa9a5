"""Hash lists in and out: a collection as CSV ``hash,id,metadata``, as partners exchange them.

``hash`` is the code's text (``malle.bank.codes``: for PDQ, ThreatExchange's 64 hex characters), ``id`` the
item's id in the exporting bank, ``metadata`` its JSON object. Importing makes one item per row with no image:
the row's ``id`` becomes the item's filename (what matches then name), its SHA-256 is of the code
(``digest_of`` = "code", so the same hash twice is one item), and it has no thumbnail. A row that cannot be
used (a code of the wrong length or form, metadata that is not a JSON object) is skipped with its line number
and reason; the others are added in one transaction per ``CHUNK`` rows.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from malle.bank import codes as code_text
from malle.bank.metadata import metadata_json
from malle.bank.store import NewItem
from malle.errors import ConfigError, MalleError

COLUMNS = ["hash", "id", "metadata"]
CHUNK = 4096
MAX_FIELD = 1 << 20  # characters in one CSV field (csv's default limit is 128 KiB; a base64 code is far less)


def export_rows(bank, name: str) -> str:
    """The collection's live items as CSV text, in id order."""
    coll = bank.collection(name, count=False)
    with bank.store.reading() as db:
        ids, codes = bank.store.codes(coll, db)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for start in range(0, len(ids), 500):
        part = [int(i) for i in ids[start:start + 500]]
        items = {item.id: item for item in bank.store.items(name, part)}
        for item_id, code in zip(part, codes[start:start + 500]):
            writer.writerow([code_text.to_text(code), item_id, json.dumps(items[item_id].metadata, sort_keys=True)])
    return out.getvalue()


def read_rows(path: Path) -> list[dict]:
    """The CSV's rows (header checked), each with its line number."""
    csv.field_size_limit(MAX_FIELD)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"hash", "id"} <= set(reader.fieldnames):
                raise ConfigError(f"{path}: a hash list's header is {','.join(COLUMNS)} (got "
                                  f"{','.join(reader.fieldnames or []) or 'nothing'})")
            return [{**row, "line": reader.line_num} for row in reader]
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"{path}: not a UTF-8 CSV file ({err})") from None


def import_rows(bank, name: str, path: Path):
    """Add every usable row of the hash list at ``path``; an ``AddReport`` (skipped: line and reason)."""
    from malle.bank.bank import AddReport, sha256_of

    coll = bank.collection(name, count=False)
    new, skipped = [], []
    for row in read_rows(path):
        try:
            code = code_text.from_text(row.get("hash") or "", coll)
            metadata = json.loads(metadata_json(row.get("metadata") or None))
        except MalleError as err:
            skipped.append({"path": f"{path.name}:{row['line']}", "reason": str(err)})
            continue
        label = ((row.get("id") or "").strip() or f"line {row['line']}")[:255]
        new.append(NewItem(sha256_of(code.tobytes()), label, code, metadata, "code"))
    report = AddReport([], [], pd.DataFrame(skipped, columns=["path", "reason"]))
    for start in range(0, len(new), CHUNK):
        for item, created in bank.add_codes(name, new[start:start + CHUNK]):
            (report.added if created else report.existing).append(item)
    return report
