"""Each stage built alone on a tiny fixture (4 real photos, pHash), and the engine's guarantees.

"Alone": a fresh cache and a fresh experiment are asked for that one stage; the engine builds
what it needs first, and refuses a read the stage did not declare, so each test also checks
that the stage's ``needs`` (and so its key) cover what its build reads.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from malle.cli import main
from malle.io import cache
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.lab.stages import STAGES, Node, Stage, StageGraphError, StageRunner
from malle.lab.stages.derived import ByMethod
from malle.ops import AugmentConfig

TINY = dict(n=4, n_classes=0, seed=0, methods=("phash",), augment=AugmentConfig(copies=(2,), chain_lengths=(2, 3)))


def tiny(data: Path, root: Path, **config) -> Experiment:
    return Experiment(ExperimentConfig(data=str(data), **{**TINY, **config}), root)


def built_alone(exp: Experiment, kind: str, *args):
    stage = exp.stage(kind, *args)
    assert not stage.cached and stage.folder == exp.folder(kind, *args)
    assert stage.folder.parent.name == kind and cache.problem_with(stage.folder) is None
    assert stage.meta["seconds"] >= 0 and "items" in stage.meta
    return stage


# -- the registry -----------------------------------------------------------------------------------
def test_every_stage_is_registered_under_its_module_and_cache_folder_name():
    assert {"samples", "copies", "embed", "references", "search", "distractors", "openset", "attribution", "sweep",
            "sweepscore"} <= set(STAGES)
    for kind, spec in STAGES.items():
        plain = spec.plain if isinstance(spec, ByMethod) else spec  # derived methods get their own variant
        assert importlib.import_module(f"malle.lab.stages.{kind}").STAGE is plain
        assert isinstance(spec, Stage) and spec.kind == kind and isinstance(spec.version, int)


def test_keys_follow_inputs_and_are_computed_without_running_anything(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path)
    openset = exp.folder("openset", "phash")
    assert not any(tmp_path.iterdir()), "computing a key built something"
    other_seed = tiny(tree_dataset, tmp_path, seed=1)
    assert other_seed.folder("samples") != exp.folder("samples") and other_seed.folder("openset", "phash") != openset
    deeper = tiny(tree_dataset, tmp_path, depth=50)  # a search parameter: the search and what reads it move
    assert deeper.folder("embed", "phash") == exp.folder("embed", "phash")
    assert deeper.folder("search", "phash") != exp.folder("search", "phash")
    assert deeper.folder("attribution", "phash") != exp.folder("attribution", "phash")
    assert deeper.folder("distractors") == exp.folder("distractors")


# -- one test per stage -------------------------------------------------------------------------------
def test_samples(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path)
    stage = built_alone(exp, "samples")
    assert stage.meta["items"] == 4 and len(exp.originals) == 4
    assert all((stage.folder / "originals" / f).is_file() for f in exp.originals["file"])
    assert tiny(tree_dataset, tmp_path).stage("samples").cached


def test_copies(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path)
    stage = built_alone(exp, "copies")
    assert stage.meta["items"] == len(exp.manifest) == 8
    assert set(exp.manifest["source"]) == set(exp.originals["file"])
    assert all((stage.folder / "images" / f).is_file() for f in exp.manifest["file"])


def test_embed(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path)
    stage = built_alone(exp, "embed", "phash")
    originals, queries = exp.codes("phash")
    assert originals.shape == (4, 8) and queries.shape == (8, 8)  # 64-bit pHash, packed
    assert stage.meta["label"] == exp.descriptor("phash").label and exp.embed_index("phash").ntotal == 4


def test_references(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path, db_distractors=3)
    stage = built_alone(exp, "references", "phash")
    refs = exp.references("phash")
    assert stage.meta["items"] == len(refs) == 3 and refs["file"].str.startswith("db:").all()
    assert cache.read_npy(stage.folder / "codes.npy").shape == (3, 8)
    assert not set(refs["file"].str.removeprefix("db:")) & set(exp.originals["source_path"])


def test_search_needs_references_only_when_the_database_has_them(tree_dataset, tmp_path):
    plain, grown = tiny(tree_dataset, tmp_path), tiny(tree_dataset, tmp_path / "grown", db_distractors=3)
    assert plain.engine.needs(plain, Node("search", ("phash",))) == (Node("embed", ("phash",)),)
    assert Node("references", ("phash",)) in grown.engine.needs(grown, Node("search", ("phash",)))
    stage = built_alone(grown, "search", "phash")
    ids, scores = grown.neighbours("phash")
    assert stage.meta["database_size"] == 7 and ids.shape == scores.shape == (8, 7)
    per_query = cache.read_table(stage.folder / "per_query.parquet")
    assert len(per_query) == 8 and per_query["rank"].notna().all()


def test_distractors(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path, distractors=5)
    stage = built_alone(exp, "distractors")
    made = exp.distractor_manifest
    assert stage.meta["items"] == len(made) == 5
    assert not set(made["origin"]) & set(exp.originals["source_path"])


def test_openset(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path, distractors=5)
    stage = built_alone(exp, "openset", "phash")
    predictions = cache.read_table(stage.folder / "predictions.parquet")
    assert set(predictions["query"]) == set(exp.manifest["file"]) | set(exp.distractor_manifest["file"])
    assert 0 <= stage.meta["uap"] <= 1 and stage.meta["n_positives"] == 8


def test_attribution(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path)
    stage = built_alone(exp, "attribution", "phash")
    summary = cache.read_table(stage.folder / "summary.parquet")
    assert list(summary.columns) == ["method", "op", "misses_charged", "share"]
    assert stage.meta["items"] == len(cache.read_table(stage.folder / "per_query.parquet"))


def test_sweep(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path)
    untouched, blurred = built_alone(exp, "sweep", "blur", 0), built_alone(exp, "sweep", "blur", 2)
    for file in exp.originals["file"]:
        assert (untouched.folder / "images" / file).read_bytes() == (exp.originals_dir / file).read_bytes()
        assert (blurred.folder / "images" / file).read_bytes() != (exp.originals_dir / file).read_bytes()
    assert blurred.meta["items"] == 4 and blurred.meta["param"] == "sigma=1"


def test_sweepscore(tree_dataset, tmp_path):
    exp = tiny(tree_dataset, tmp_path)
    assert not exp.is_cached("sweepscore", "phash", "blur", 0)
    stage = built_alone(exp, "sweepscore", "phash", "blur", 0)
    assert stage.meta["recall_at_1"] == stage.meta["recall_at_10"] == 1.0 and stage.meta["n"] == 4
    assert exp.is_cached("sweepscore", "phash", "blur", 0)


# -- the engine refuses a stage whose reads its key does not cover ----------------------------------------
class ReadsCopiesUndeclared(Stage):
    kind, version = "sneaky", 1

    def needs(self, ctx):
        return (Node("samples"),)

    def build(self, ctx, tmp, meta):
        meta.update(items=len(ctx.run.manifest))  # the copies: not among its needs


class KeyNeedsABuiltStage(Stage):
    kind, version = "eager", 1

    def needs(self, ctx):
        return (Node("samples"),)

    def key_parts(self, ctx):
        return (len(ctx.run.originals),)


@pytest.mark.parametrize("spec, message", [(ReadsCopiesUndeclared(), "not among its needs"),
                                           (KeyNeedsABuiltStage(), "keys must be computable")])
def test_an_undeclared_read_is_refused(tree_dataset, tmp_path, spec, message):
    exp = tiny(tree_dataset, tmp_path)
    exp.engine = StageRunner({**STAGES, spec.kind: spec}, exp.root, exp.log)
    with pytest.raises(StageGraphError, match=message):
        exp.stage(spec.kind)


def test_each_stage_instance_is_built_once_under_concurrent_requests(tree_dataset, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    exp = tiny(tree_dataset, tmp_path)
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: exp.stage("embed", "phash"), range(8)))
    assert len({id(f) for f in found}) == 1 and not found[0].cached


# -- python -m malle stages ------------------------------------------------------------------------------
def test_the_stages_command_prints_the_graph_keys_and_what_is_cached(tree_dataset, tmp_path, capsys):
    options = ["--data", str(tree_dataset), "--n", "4", "--n-classes", "0", "--methods", "phash", "--copies", "2",
               "--cache", str(tmp_path)]
    assert main(["stages", *options, "--db-distractors", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    exp = tiny(tree_dataset, tmp_path, augment=AugmentConfig(copies=(2,)), db_distractors=2)
    search = next(line for line in lines if line.split()[0] == "search[phash]")
    assert "to compute" in search and exp.folder("search", "phash").name in search
    assert search.endswith("<- embed[phash], references[phash]")
    assert [line.split()[0] for line in lines[1:-1]] == [str(n) for n in exp.engine.order(exp, exp.run_nodes(True))]
    assert lines[-1] == "0 of 9 cached"  # with calibrate[phash]
    exp.stage("copies")
    assert main(["stages", *options, "--db-distractors", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 of 9 cached" in out and np.all(["cached" in line for line in out.splitlines()[1:3]])


# -- typed outputs ------------------------------------------------------------------------------------
def test_every_file_a_stage_writes_is_declared_by_its_outputs_class(tree_dataset, tmp_path):
    """``malle.lab.stages.outputs`` names each stage's files once; a stage writing an undeclared file (or a
    declared name drifting from what is written) fails here."""
    from malle.lab.stages.outputs import OUTPUTS

    exp = tiny(tree_dataset, tmp_path, db_distractors=1, methods=("phash", "sscd_distilled+norm"))
    exp.run()
    seen = set()
    for kind, cls in OUTPUTS.items():
        for folder in (tmp_path / kind).glob("*") if (tmp_path / kind).is_dir() else ():
            if folder.name.startswith(".") or not (folder / cache.DONE_MARK).is_file():
                continue
            written = {p.name for p in folder.iterdir()} - {cache.DONE_MARK}
            assert written <= set(cls.files()), f"{kind}: undeclared files {sorted(written - set(cls.files()))}"
            seen.add(kind)
    assert {"samples", "copies", "embed", "references", "search", "distractors", "openset", "attribution",
            "background"} <= seen
