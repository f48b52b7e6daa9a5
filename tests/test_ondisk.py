"""An IVF-PQ index built in pieces (here and as tasks on a local Ray cluster) and merged on disk with
``faiss.contrib.ondisk``, against an in-memory index from the same trained index.

The database: 20,000 512-d float32 vectors (seeded clusters, unit length, as SSCD's are) written as
``malle embed`` shards, 16 of them being the real SSCD-distilled embeddings of demo photos. The queries
are edited copies of those photos (cropped, shrunk, recompressed), encoded for real.
"""

from __future__ import annotations

import io
import shutil

import faiss
import numpy as np
import pytest
from PIL import Image

from malle.cli import main
from malle.descriptors import create_descriptor
from malle.errors import ConfigError
from malle.io import shards as embeddings
from malle.scale import ondisk

METHOD = "sscd_distilled"
COUNT = 20_000
DIM = 512
REAL = 16
# Small enough to train in seconds on a busy 2-core machine: 64 lists, 32 sub-quantizers of 4 bits (16 bytes a
# vector), trained on 4,096 vectors (FAISS wants ~40 a centroid).
FACTORY = "IVF64,PQ32x4"
TRAIN = 4096
K = 10


def edited(photo) -> Image.Image:
    """A modified copy: the central 80 %, shrunk to 300 px, JPEG quality 60."""
    image = Image.open(photo).convert("RGB")
    w, h = image.size
    crop = image.crop((w // 10, h // 10, w - w // 10, h - h // 10)).resize((300, 300))
    buffer = io.BytesIO()
    crop.save(buffer, "JPEG", quality=60)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def synthetic(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors around 256 seeded centres: clustered like real embeddings, unrelated to any photo."""
    centres = rng.standard_normal((256, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def database(tmp_path_factory, demo_photos):
    """(embeddings folder, row of each real photo, edited-copy queries)."""
    desc = create_descriptor(METHOD, precision="fp32")  # exact: the same codes on every CPU kind
    desc.use_cache(tmp_path_factory.mktemp("models"))
    desc.load()
    photos = demo_photos[:REAL]
    real = desc.encode([Image.open(p).convert("RGB") for p in photos])
    queries = desc.encode([edited(p) for p in photos])
    rng = np.random.default_rng(7)
    vectors = synthetic(rng, COUNT)
    rows = np.sort(rng.choice(COUNT, REAL, replace=False))
    vectors[rows] = real
    paths = [f"synthetic/{i:06d}" for i in range(COUNT)]
    for row, photo in zip(rows, photos):
        paths[row] = f"demo/{photo.name}"
    folder = tmp_path_factory.mktemp("embeddings")
    manifest = embeddings.write(folder, desc, paths, vectors)
    assert len(manifest["shards"]) == 5  # 4,096 rows a shard: several tasks
    return folder, rows, queries


def in_memory(out, folder) -> faiss.Index:
    """The reference: the build's own trained index, every vector added in one process, in row order."""
    index = faiss.read_index(str(out / ondisk.TRAINED))
    vectors = embeddings.read(folder).vectors
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    faiss.ParameterSpace().set_index_parameters(index, ondisk.read_manifest(out)["search_params"])
    return index


@pytest.fixture(scope="module")
def local_build(database, tmp_path_factory):
    folder, _, _ = database
    out = tmp_path_factory.mktemp("local-index")
    manifest = ondisk.build(ondisk.BuildPlan(folder, FACTORY, out, TRAIN, shards_per_task=2), log=lambda m: None)
    return out, manifest


def test_the_merged_on_disk_index_answers_as_the_in_memory_one(database, local_build):
    folder, rows, queries = database
    out, manifest = local_build
    assert manifest["count"] == COUNT and manifest["lists"] == 64 and manifest["search_params"] == "nprobe=16"
    assert sorted(p.name for p in out.iterdir()) == [ondisk.INDEX, ondisk.IVFDATA, ondisk.MANIFEST, ondisk.TRAINED]
    on_disk, _ = ondisk.open_index(out, verify_lists=True)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(on_disk).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)
    reference = in_memory(out, folder)
    probes = np.concatenate([queries, synthetic(np.random.default_rng(99), 200)])
    found_scores, found_ids = on_disk.search(probes, K)
    want_scores, want_ids = reference.search(probes, K)
    np.testing.assert_array_equal(found_ids, want_ids)
    np.testing.assert_array_equal(found_scores, want_scores)
    # Each edited copy finds its photo first, among 20,000 vectors compressed to 16 bytes.
    np.testing.assert_array_equal(found_ids[:REAL, 0], rows)


def damaged_copy(folder, target):
    """The embeddings folder with one shard the training sample does not read (it reads one shard: the first
    of the seeded order) damaged, so that the damage is met in an add task."""
    shutil.copytree(folder, target)
    first = np.random.default_rng(0).permutation(5)[0]
    victim = target / embeddings.shard_name((first + 1) % 5)
    victim.write_bytes(victim.read_bytes()[:-9] + b"damaged!!")
    return victim


def test_adding_in_ray_tasks_gives_the_same_lists(database, local_build, tmp_path):
    import ray

    folder, _, _ = database
    victim = damaged_copy(folder, tmp_path / "damaged")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        plan = ondisk.BuildPlan(folder, FACTORY, tmp_path / "out", TRAIN, shards_per_task=1)
        manifest = ondisk.build(plan, ray_address="local", log=lambda m: None)
        with pytest.raises(ConfigError, match=f"shard {victim} is missing or damaged"):
            ondisk.build(ondisk.BuildPlan(tmp_path / "damaged", FACTORY, tmp_path / "out2", TRAIN, shards_per_task=1),
                         ray_address="local", log=lambda m: None)
    finally:
        ray.shutdown()
    local = local_build[1]
    # Tasks finish in any order; parts are merged in shard order, so the lists file is the same bytes.
    assert manifest["files"][ondisk.IVFDATA] == local["files"][ondisk.IVFDATA]
    assert manifest["files"][ondisk.TRAINED] == local["files"][ondisk.TRAINED]
    assert manifest["count"] == COUNT
    assert not (tmp_path / "out2" / ondisk.MANIFEST).exists()


def test_a_damaged_shard_is_one_line(database, tmp_path, capsys):
    folder, _, _ = database
    victim = damaged_copy(folder, tmp_path / "damaged")
    code = main(["index-build", "--embeddings", str(tmp_path / "damaged"), "--factory", FACTORY,
                 "--train-size", str(TRAIN), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == (f"malle: error: embeddings shard {victim} is missing or damaged (its SHA-256 "
                                     "differs from the manifest)")
    assert not (tmp_path / "out" / ondisk.MANIFEST).exists()


def test_a_damaged_index_is_refused_in_one_line(local_build, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(local_build[0], out)
    header = out / ondisk.INDEX
    header.write_bytes(header.read_bytes()[:-8] + b"damaged!")
    with pytest.raises(ConfigError, match="index.faiss is damaged"):
        ondisk.open_index(out)
    lists = out / ondisk.IVFDATA
    lists.write_bytes(lists.read_bytes()[:-1])
    with pytest.raises(ConfigError, match="index.ivfdata is missing or not the size"):
        ondisk.open_index(out)
    (out / ondisk.MANIFEST).unlink()
    with pytest.raises(ConfigError, match="not a finished on-disk index"):
        ondisk.open_index(out)


@pytest.mark.parametrize("factory, message", [
    ("HNSW32", "'HNSW32' is not an IVF index"),
    ("IVF8192,PQ32", "cannot be trained on 4,096"),
    ("IVF64,PQ33", "is not an index FAISS can build for 512-d codes"),
])
def test_an_unusable_factory_is_one_line(database, tmp_path, capsys, factory, message):
    folder, _, _ = database
    code = main(["index-build", "--embeddings", str(folder), "--factory", factory, "--out", str(tmp_path),
                 "--train-size", str(TRAIN)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) <= 2 and message in err[-1], err
    assert not (tmp_path / ondisk.MANIFEST).exists()


def test_hash_codes_are_refused(tmp_path, demo_photos, capsys):
    desc = create_descriptor("phash")
    codes = desc.encode([Image.open(p).convert("RGB") for p in demo_photos[:4]])
    embeddings.write(tmp_path / "hashes", desc, [p.name for p in demo_photos[:4]], codes)
    code = main(["index-build", "--embeddings", str(tmp_path / "hashes"), "--factory", "IVF16,PQ8",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"malle: error: {tmp_path / 'hashes'} holds hamming codes; an on-disk IVF index is "
                                 "built from float embeddings (sscd, sscd_distilled, efficientnet_lite2, resnet50...)"]
