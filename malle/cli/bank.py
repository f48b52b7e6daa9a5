"""``malle bank create|add|remove|match|import|export|info|verify BANK``: a folder of reference images per method.

    malle bank create refs photos --method sscd_distilled [--threshold T | --threshold-from OUT [--precision-target P]]
    malle bank add refs -c photos DIR_OR_FILE... [--metadata JSON]
    malle bank add refs -c photos --from-embeddings EMBED_OUT [--images DIR] [--index-from INDEX_BUILD_OUT]
    malle bank match refs -c photos QUERY... [-k 5] [--threshold T] [--out matches.csv]
    malle bank remove refs -c photos ID...
    malle bank import refs -c photos hashes.csv      # a hash list (hash,id,metadata), items without images
    malle bank export refs -c photos [--out hashes.csv]   # PDQ as ThreatExchange's 64 hex characters

Options and paths may come in any order (``bank add refs DIR -c photos`` is ``bank add refs -c photos DIR``).
    malle bank info refs | malle bank verify refs

Scores and thresholds are in the method's unit: cosine similarity for embeddings (a match scores at least
the threshold), Hamming distance in bits for hashes (a match is at most the threshold away).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.catalogue import BANK_MAX_K as MAX_K
from malle.cli.catalogue import PRECISIONS
from malle.cli.options import add_cache_option, method_name, progress_bar, skip_summary
from malle.errors import ConfigError

if TYPE_CHECKING:
    from malle.bank import Bank

NAME = "bank"
HELP = "banks of reference images: create, add, remove, match, import, export, info, verify"
MATCH_COLUMNS = ["query", "rank", "id", "filename", "score", "is_match", "threshold", "metadata"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, parser_class=IntermixedParser)
    create = _action(actions, "create", "a new collection in a bank (a new folder becomes a bank)")
    create.add_argument("name", help="collection name: letters, digits, '_', '.', '-'")
    create.add_argument("--method", required=True, type=method_name, help="the method that encodes its images")
    create.add_argument("--threshold", type=float, default=None,
                        help="in the method's unit (cosine similarity, or Hamming bits for hashes)")
    create.add_argument("--threshold-from", default=None, metavar="OUT",
                        help="a lab run's output folder: take the method's threshold at the precision target from "
                             "its predictions, and its confidence map from calibration.json (default: the "
                             "calibrated default threshold, malle.bank.thresholds, and the map calibrated on the "
                             "reproduction run)")
    create.add_argument("--precision-target", type=float, default=None, metavar="P",
                        help="the precision the threshold keeps on the run's open set, such as 0.95 (default 0.9; "
                             "other targets need --threshold-from)")
    create.add_argument("--index", default="Flat", metavar="FACTORY",
                        help="FAISS index-factory string as in `run --index` (default Flat: exact); IVF "
                             "indexes (IVF4096,PQ64...) keep their lists on disk, memory-mapped")
    create.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="CNN inference precision (default fp32, as the calibrated thresholds were measured)")
    add_add_arguments(_action(actions, "add", "add image files, folders, or a `malle embed` output"))
    remove = _action(actions, "remove", "remove items by id")
    _collection_option(remove)
    remove.add_argument("ids", nargs="+", type=int, metavar="ID")
    match = _action(actions, "match", "match query images against a collection")
    _collection_option(match)
    match.add_argument("queries", nargs="+", type=Path, metavar="QUERY", help="image files or folders")
    match.add_argument("-k", type=int, default=5, help=f"matches per query, 1..{MAX_K} (default 5)")
    match.add_argument("--threshold", type=float, default=None, help="default: the collection's")
    match.add_argument("--out", type=Path, default=None, help="write every match to this CSV instead of printing")
    hashes_in = _action(actions, "import", "add a hash list (CSV hash,id,metadata): items without images")
    _collection_option(hashes_in)
    hashes_in.add_argument("csv", type=Path, metavar="FILE.csv", help="columns hash, id, metadata (JSON object)")
    hashes_out = _action(actions, "export", "a collection as a hash list (CSV hash,id,metadata)")
    _collection_option(hashes_out)
    hashes_out.add_argument("--out", type=Path, default=None, help="the CSV to write (default: standard output)")
    _action(actions, "info", "collections, counts, thresholds and index state")
    _action(actions, "verify", "check the database (integrity, every code's size) and the indexes")


def add_add_arguments(add: argparse.ArgumentParser) -> None:
    """``bank add``'s options, apart so another input (``--ray``) can join them."""
    _collection_option(add)
    add.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="image files and folders (recursive)")
    add.add_argument("--metadata", default=None, metavar="JSON", help="a JSON object stored with every item added")
    add.add_argument("--from-embeddings", type=Path, default=None, metavar="DIR",
                     help="add the codes `malle embed` wrote to DIR instead of encoding images")
    add.add_argument("--images", type=Path, default=None, metavar="DIR",
                     help="with --from-embeddings: the folder that was embedded, to record each file's SHA-256")
    add.add_argument("--index-from", type=Path, default=None, metavar="DIR",
                     help="take the index `malle index-build` wrote to DIR (same method, fingerprint and --index) "
                          "instead of building one")


class IntermixedParser(argparse.ArgumentParser):
    """A subcommand's parser that takes options between its positional arguments, as users type them
    (``bank add refs DIR -c photos``: a plain parser would leave DIR over)."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._mixing:  # parse_known_intermixed_args calls back here for each of its two passes
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def _action(actions, name: str, text: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text)
    parser.add_argument("bank", type=Path, metavar="BANK", help="bank folder")
    add_cache_option(parser)
    return parser


def _collection_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--collection", default=None, help="collection name (default: the only one)")


def run(args: argparse.Namespace, say) -> int:
    from malle.bank import Bank
    from malle.io import cache  # here, not at the top: `malle --help` must not wait for the bank's imports

    bank = Bank.open(args.bank, create=args.action == "create", log=say,
                     model_cache=cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache"))
    try:
        return ACTIONS[args.action](bank, args, say)
    finally:
        bank.close()


def collection_name(bank: Bank, given: str | None) -> str:
    if given:
        return given
    names = [c.name for c in bank.collections()]
    if len(names) != 1:
        raise ConfigError(f"give --collection: the bank holds {len(names)} collections"
                          + (f" ({', '.join(names)})" if names else ""))
    return names[0]


def create(bank: Bank, args: argparse.Namespace, say) -> int:
    coll = bank.create_collection(args.name, args.method, args.threshold, args.threshold_from, args.index,
                                  args.precision, args.precision_target)
    print(f"Created collection {coll.name!r} in {args.bank}: {coll.method}, threshold {coll.threshold:g} "
          f"({coll.threshold_source}), index {coll.index_factory}")
    print(f"Confidence: {coll.calibration['source'] if coll.calibration else 'none (no calibration for this method)'}")
    return 0


def add(bank: Bank, args: argparse.Namespace, say) -> int:
    name = collection_name(bank, args.collection)
    if args.from_embeddings is not None:
        if args.paths:
            raise ConfigError("give image paths or --from-embeddings, not both")
        report = bank.add_embeddings(name, args.from_embeddings, args.images)
    else:
        if not args.paths:
            raise ConfigError("give image files or folders to add (or --from-embeddings DIR)")
        missing = [str(p) for p in args.paths if not p.exists()]
        if missing:
            raise ConfigError(f"not found: {', '.join(missing)}")
        report = bank.add_files(name, args.paths, args.metadata, progress=progress_bar)
    if args.index_from is not None:
        bank.use_index(name, args.index_from)
    else:
        bank.refresh(name)
    print(f"{name}: {len(report.added)} added, {len(report.existing)} already there; "
          f"the collection holds {bank.collection(name).count}")
    if len(report.skipped):
        say(skip_summary(report.skipped))
        for row in report.skipped.itertuples():
            say(f"  skipped {row.path}: {row.reason}")
    return 0


def remove(bank: Bank, args: argparse.Namespace, say) -> int:
    name = collection_name(bank, args.collection)
    for item_id in args.ids:
        item = bank.remove(name, item_id)
        print(f"removed {item.id} ({item.filename})")
    bank.refresh(name)
    return 0


def query_files(paths: list[Path]) -> tuple[list[Path], list[dict]]:
    """The images to match or hash: folders walked as ``bank add`` walks them (``image_files``)."""
    from malle.data.sampling import image_files

    return image_files(paths)


def match(bank: Bank, args: argparse.Namespace, say) -> int:
    import pandas as pd

    from malle.io import cache
    from malle.lab.results import rounded

    name = collection_name(bank, args.collection)
    files, passed_over = query_files(args.queries)
    results, skipped = bank.match_files(name, files, args.k, args.threshold)
    rows = [{"query": str(path), "rank": rank, "id": m.item.id, "filename": m.item.filename, "score": m.score,
             "is_match": m.is_match, "threshold": result.threshold, "metadata": json.dumps(m.item.metadata)}
            for path, result in results for rank, m in enumerate(result.matches, 1)]
    table = pd.DataFrame(rows, columns=MATCH_COLUMNS)
    skipped = pd.concat([pd.DataFrame(passed_over, columns=["path", "reason"]), skipped], ignore_index=True)
    if args.out is not None:
        cache.write_table(args.out, rounded(table))
        print(f"{len(results)} queries, {int(table['is_match'].sum())} matches at the threshold; wrote {args.out}")
    else:
        for path, result in results:
            print(f"{path}: {sum(m.is_match for m in result.matches)} match(es) at threshold {result.threshold:g}"
                  + (f" (low-quality query: {result.quality_reason})" if result.quality == "low" else ""))
            for rank, m in enumerate(result.matches, 1):
                print(f"  {rank}. id {m.item.id} {m.item.filename}  score {m.score:g}"
                      + (f"  confidence {m.confidence:.2f}" if m.confidence is not None else "")
                      + ("  MATCH" if m.is_match else ""))
    if len(skipped):
        say(skip_summary(skipped))
    return 0 if results else 1


def info(bank: Bank, args: argparse.Namespace, say) -> int:
    rows = bank.info()
    print(f"Bank {args.bank}: {len(rows)} collection(s), database {bank.store.path.stat().st_size / 2**20:.1f} MB")
    for row in rows:
        print(f"  {row['name']}: {row['method']} ({row['precision']}), {row['count']} items, threshold "
              f"{row['threshold']:g} [{row['threshold_source']}], index {row['index']} ({row['index_file']}"
              f"{recall_words(row)}), created {row['created']}")
    return 0


def recall_words(row: dict) -> str:
    if row.get("recall_at_10") is None:
        return ""
    probes = f" at {row['search_params']}" if row.get("search_params") else ""
    return f"; recall@10 {row['recall_at_10']:.3f}{probes} against exact search on {row['recall_sample']} queries"


def verify(bank: Bank, args: argparse.Namespace, say) -> int:
    states: dict[str, str] = {}
    problems = bank.verify(states)
    for problem in problems:
        print(f"damaged: {problem}")
    for row in bank.info():
        print(f"{row['name']}: {row['count']} items; index {row['index_file']}"
              + ("" if row["index_file"] == "current" else " (rebuilt from the database on its next use)")
              + f"; codes file {states.get(row['name'], 'not checked')}")
    print("database: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


def import_list(bank: Bank, args: argparse.Namespace, say) -> int:
    from malle.bank import hashlist

    name = collection_name(bank, args.collection)
    report = hashlist.import_rows(bank, name, args.csv)
    bank.refresh(name)
    print(f"{name}: {len(report.added)} added, {len(report.existing)} already there, {len(report.skipped)} "
          f"skipped; the collection holds {bank.collection(name).count} (imported items have no thumbnail)")
    for row in report.skipped.itertuples():
        say(f"  skipped {row.path}: {row.reason}")
    return 0 if len(report.added) + len(report.existing) else 1


def export_list(bank: Bank, args: argparse.Namespace, say) -> int:
    from malle.bank import hashlist
    from malle.io.cache import write_bytes

    name = collection_name(bank, args.collection)
    text = hashlist.export_rows(bank, name)
    if args.out is None:
        print(text, end="")
    else:
        write_bytes(args.out, text.encode())
        say(f"{name}: {text.count(chr(10)) - 1} codes written to {args.out}")
    return 0


ACTIONS = {"create": create, "add": add, "remove": remove, "match": match, "import": import_list,
           "export": export_list, "info": info, "verify": verify}
