"""Scale: index choice, a database grown with extra references, and embedding on Ray, all on real photos.

Real parts throughout: real FAISS indexes (HNSW, IVF), real descriptors, and a real
local Ray cluster started by the test (``ray.init(num_cpus=2)``).
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from malle.cli import main
from malle.errors import ConfigError
from malle.io import shards as embeddings
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.retrieval import indexes
from malle.retrieval.metrics import HAMMING, IP
from malle.scale.embed_folder import EmbedJob
from malle.scale.embed_folder import run as embed_run

FLOAT_METHOD = "sscd_distilled"  # the fastest float embedding: approximate indexes are for floats first
SMALL = dict(n=16, seed=3, distractors=0, methods=(FLOAT_METHOD, "phash"))


@pytest.fixture(scope="module")
def scale_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scale-cache")


def neighbours(config: ExperimentConfig, root, method: str = FLOAT_METHOD) -> tuple[np.ndarray, dict]:
    experiment = Experiment(config, root)
    experiment.run()
    return experiment.neighbours(method)[0][:, :10], experiment.stage("search", method).meta


# ------------------------------------------------------------------------------------- index choice


@pytest.mark.parametrize("index, params", [("HNSW32", "efSearch=512"), ("IVF8,Flat", "nprobe=8")])
def test_an_approximate_index_at_a_generous_setting_returns_the_exact_top10(scale_cache, index, params):
    exact, exact_meta = neighbours(ExperimentConfig(**SMALL), scale_cache)
    found, meta = neighbours(ExperimentConfig(**SMALL, index=index, index_params=params), scale_cache)
    np.testing.assert_array_equal(found, exact)
    assert meta["r10_vs_exact"] == meta["overlap10_vs_exact"] == 1.0 and not meta["index_exact"]
    assert meta["index"] == f"{index} ({params})"
    assert exact_meta["index_exact"] and exact_meta["index"] == "Flat"


def test_an_approximate_index_reports_its_recall_against_exact_search(scale_cache):
    config = ExperimentConfig(**SMALL, index="IVF8,Flat", index_params="nprobe=1")  # one list of eight: lossy
    results = Experiment(config, scale_cache).run()
    costs = results.costs().set_index("method")
    assert 0 < costs.loc[FLOAT_METHOD, "overlap10_vs_exact"] < 1  # at most a few items per list come back
    assert 0 < costs.loc[FLOAT_METHOD, "r10_vs_exact"] <= 1
    assert costs.loc[FLOAT_METHOD, "index"] == "IVF8,Flat (nprobe=1)" and costs.loc["phash", "index"].startswith("IVF8")


def test_a_hash_gets_the_binary_form_of_the_same_string():
    assert HAMMING.factory("HNSW32") == "BHNSW32" and HAMMING.factory("IVF64,Flat") == "BIVF64"
    assert HAMMING.factory("Flat") == "BFlat" and IP.factory("IVF64,Flat") == "IVF64,Flat"
    index = indexes.new_index(indexes.choose("HNSW32", 0, 64, HAMMING), HAMMING, 64)
    assert type(index).__name__ == "IndexBinaryHNSW" and index.hnsw.efSearch == 128
    assert indexes.default_search_params("IVF4096_HNSW32,PQ64") == "nprobe=128"
    assert indexes.default_search_params("OPQ16,IVF256,PQ16") == "nprobe=16"
    with pytest.raises(ConfigError, match="does not apply to binary hashes"):
        HAMMING.factory("IVF64,PQ8")


def test_a_bad_index_string_is_one_line_before_any_work(tmp_path, capsys):
    code = main(["demo", "--n", "4", "--index", "IVF64,PQ7", "--methods", FLOAT_METHOD, "--cache", str(tmp_path / "c"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("malle: error: --index 'IVF64,PQ7' is not an index FAISS can build for 512-d codes")
    assert not (tmp_path / "c" / "samples").exists()  # nothing was computed


def test_auto_follows_the_faiss_guidelines_by_size_and_memory():
    gib = 2**30
    assert indexes.choose("auto", 50_000, 512, IP, ram_bytes=24 * gib).factory == "Flat"
    assert indexes.choose("auto", 500_000, 512, IP, ram_bytes=24 * gib).factory == "HNSW32"
    assert indexes.choose("auto", 5_000_000, 512, IP, ram_bytes=24 * gib) == indexes.IndexChoice(
        "IVF8192_HNSW32,Flat", "nprobe=256", "5,000,000 vectors: IVF with an HNSW quantizer, K=8192")
    beyond = indexes.choose("auto", 100_000_000, 512, IP, ram_bytes=24 * gib)
    assert beyond.factory == "IVF32768_HNSW32,PQ64" and "exceed half the RAM" in beyond.reason
    assert indexes.choose("auto", 5_000_000, 64, HAMMING, ram_bytes=24 * gib).factory == "Flat"  # popcount scan


# ------------------------------------------------------------------------------------- a larger database


def test_database_distractors_join_the_database_and_never_the_queries(scale_cache):
    config = ExperimentConfig(n=16, seed=3, distractors=20, db_distractors=30, methods=(FLOAT_METHOD,))
    experiment = Experiment(config, scale_cache)
    results = experiment.run()
    database = experiment.database(FLOAT_METHOD)
    assert len(database) == 46 and database["file"].str.startswith("db:").sum() == 30
    reserved = {c.rel for c in experiment.db_distractor_images}
    assert not reserved & set(experiment.distractor_manifest["origin"])  # query distractors come from the rest
    assert not reserved & set(experiment.originals["source_path"])
    assert results.costs().set_index("method").loc[FLOAT_METHOD, "database_size"] == 46
    # Recall is measured against the larger database: a reference can now take the top place.
    alone = Experiment(ExperimentConfig(n=16, seed=3, distractors=20, methods=(FLOAT_METHOD,)), scale_cache).run()
    assert results.recall().query("k == 1")["recall"].iloc[0] <= alone.recall().query("k == 1")["recall"].iloc[0]
    predictions = results.predictions()
    assert predictions["reference"].str.startswith("db:").any()


def test_extra_references_from_images_and_from_their_embeddings_give_the_same_search(scale_cache, tmp_path,
                                                                                    demo_photos, bad_folder):
    extra = tmp_path / "extra"
    extra.mkdir()
    for photo in demo_photos[60:72]:
        shutil.copyfile(photo, extra / f"ref_{photo.name}")
    shutil.copyfile(bad_folder[0] / "truncated_1.jpg", extra / "truncated_1.jpg")
    embedded = tmp_path / "embedded"
    manifest = embed_run(EmbedJob(extra, FLOAT_METHOD, embedded, cache_root=scale_cache), log=lambda m: None)
    assert manifest["count"] == 12 and manifest["skipped"] == 1
    assert "truncated" in pd.read_csv(embedded / "skipped.csv")["reason"].iloc[0]
    base = dict(n=16, seed=3, distractors=0, methods=(FLOAT_METHOD,))
    logs: list[str] = []
    from_images = Experiment(ExperimentConfig(**base, db_extra=str(extra)), scale_cache, log=logs.append)
    from_embeddings = Experiment(ExperimentConfig(**base, db_extra=str(embedded)), scale_cache)
    a, b = from_images.run(), from_embeddings.run()
    assert len(from_images.database(FLOAT_METHOD)) == len(from_embeddings.database(FLOAT_METHOD)) == 28
    assert any("1 extra reference file(s) skipped" in line for line in logs)
    np.testing.assert_array_equal(from_images.neighbours(FLOAT_METHOD)[0], from_embeddings.neighbours(FLOAT_METHOD)[0])
    pd.testing.assert_frame_equal(a.recall(), b.recall())


def test_embeddings_of_another_method_or_a_damaged_shard_are_refused(scale_cache, tmp_path, demo_photos):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for photo in demo_photos[:3]:
        shutil.copyfile(photo, folder / photo.name)
    embedded = tmp_path / "emb"
    embed_run(EmbedJob(folder, "phash", embedded, cache_root=scale_cache), log=lambda m: None)
    config = ExperimentConfig(n=4, distractors=0, methods=(FLOAT_METHOD,), db_extra=str(embedded))
    with pytest.raises(ConfigError, match="were made by 'phash', not 'sscd_distilled'"):
        Experiment(config, tmp_path / "c").run()
    missing = ExperimentConfig(n=4, distractors=0, methods=(FLOAT_METHOD,), db_extra=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="--db-extra .*nowhere is not a folder"):
        Experiment(missing, tmp_path / "c").run()
    shard = embedded / embeddings.shard_name(0)
    shard.write_bytes(shard.read_bytes()[:-9] + b"damaged!!")
    with pytest.raises(ConfigError, match="missing or damaged"):
        embeddings.read(embedded)


# ------------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("method", ["efficientnet_lite2", "phash"])
def test_embedding_on_a_local_ray_cluster_equals_the_local_path(local_ray, scale_cache, tmp_path, demo_photos,
                                                                bad_folder, method):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in demo_photos[:70]:  # more than one Ray batch
        shutil.copyfile(photo, folder / photo.name)
    shutil.copyfile(bad_folder[0] / "empty_1.jpg", folder / "empty_1.jpg")
    local = embed_run(EmbedJob(folder, method, tmp_path / "local", cache_root=scale_cache), log=lambda m: None)
    on_ray = embed_run(EmbedJob(folder, method, tmp_path / "ray", cache_root=scale_cache), ray_address="local",
                       log=lambda m: None)
    assert local["count"] == on_ray["count"] == 70 and local["skipped"] == on_ray["skipped"] == 1
    a, b = embeddings.read(tmp_path / "local"), embeddings.read(tmp_path / "ray")
    assert a.paths == b.paths
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert pd.read_csv(tmp_path / "ray" / "skipped.csv")["path"].tolist() == ["empty_1.jpg"]


def test_an_unreachable_ray_address_is_one_line(tmp_path, capsys, demo_photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copyfile(demo_photos[0], folder / "a.jpg")
    code = main(["embed", "--data", str(folder), "--method", "phash", "--out", str(tmp_path / "out"),
                 "--ray", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["malle: error: --ray 127.0.0.1:1: cannot reach a Ray cluster (Connection refused)"]
    assert not (tmp_path / "out" / embeddings.MANIFEST).exists()
