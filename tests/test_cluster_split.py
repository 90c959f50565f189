"""The split of one run over N workers, as every worker computes it on its own: worker k sends exactly the global
requests i with i mod N == k of the one-machine schedule (constant rate, stages, Poisson with the shared
seed), connections and closed-model users are split with totals kept, and an ingestion's shards partition
the input (a folder's files in name order) with the ids an unsplit run gives.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.ingest.prepare import Prepared, RequestShape, docs_of, prepare_input
from loadtest.ingest.readers import InputError, ReaderOptions, open_input
from loadtest.models.base import share
from loadtest.models.schedule import ConstantRate, Schedule, Stages


def schedules(seed: int) -> list[Schedule]:
    return [
        ConstantRate(1000, duration_s=0.5),
        ConstantRate(700, duration_s=0.5, arrival="poisson", seed=seed),
        Stages([(0.3, 900), (0.2, 900), (0.3, 0)], arrival="even"),
        Stages([(0.3, 900), (0.3, 0)], arrival="poisson", seed=seed),
        ConstantRate(333, max_requests=101),
    ]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("index", range(5), ids=["constant", "poisson", "stages", "stages-poisson", "requests"])
def test_the_shards_are_the_one_machine_schedule_dealt_out(index: int, n: int) -> None:
    whole = list(schedules(seed=42)[index].due_times())
    # Each worker builds its own schedule object from the same options and seed (the coordinator's).
    shards = [list(schedules(seed=42)[index].shard(k, n)) for k in range(n)]
    assert sum(len(s) for s in shards) == len(whole) > 0
    for k, shard in enumerate(shards):
        assert shard == whole[k::n]  # global request i goes to worker i mod n, at its one-machine due time
    assert sorted(t for s in shards for t in s) == sorted(whole)


def test_poisson_workers_agree_only_through_the_shared_seed() -> None:
    a = list(ConstantRate(500, duration_s=1, arrival="poisson", seed=7).due_times())
    b = list(ConstantRate(500, duration_s=1, arrival="poisson", seed=7).due_times())
    c = list(ConstantRate(500, duration_s=1, arrival="poisson", seed=8).due_times())
    assert a == b != c


def test_a_shard_outside_the_run_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"worker must be in 0\.\.2"):
        ConstantRate(10, duration_s=1).shard(3, 3)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 10_000), n=st.integers(1, 64))
def test_connections_and_users_split_with_the_total_kept(total: int, n: int) -> None:
    shares = [share(total, k, n) for k in range(n)]
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)  # the extra ones go to the first workers


# ---- ingestion shards ----------------------------------------------------------------------------------


def _documents(inp_name: str, options: ReaderOptions, mode: str = "bytes") -> list[dict[str, object]]:
    """(shard position, id, text) of every Document the shard sends, from the frames it would send."""
    inp = open_input(inp_name, options)
    try:
        inp.prepare()
        found = []
        for item in prepare_input(inp, lambda _p: False, None, 7, RequestShape(mode=mode)):
            if isinstance(item, Prepared):
                for position, doc in zip(item.positions, docs_of(item, mode), strict=True):
                    found.append({"position": position, "id": doc.id, "text": doc.text or doc.uri})
        return found
    finally:
        inp.close()


@pytest.mark.parametrize("mode", ["bytes", "json"])
def test_jsonl_shards_partition_the_input_with_the_unsplit_ids(tmp_path: Path, mode: str) -> None:
    lines = []
    for i in range(103):
        doc: dict[str, object] = {"text": f"doc {i}"}
        if i % 10 == 3:
            doc["id"] = f"given-{i}"
        lines.append(orjson.dumps(doc).decode())
        if i % 17 == 0:
            lines.append("")  # blank lines are not records
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    whole = _documents(str(path), ReaderOptions(), mode)
    assert len(whole) == 103
    n = 3
    for k in range(n):
        shard = _documents(str(path), ReaderOptions(shard_index=k, shard_count=n), mode)
        assert [d["position"] for d in shard] == list(range(len(shard)))  # numbered among themselves
        assert [(d["id"], d["text"]) for d in shard] == [(d["id"], d["text"]) for d in whole[k::n]]


def test_csv_and_folder_shards(tmp_path: Path) -> None:
    csv_path = tmp_path / "docs.csv"
    csv_path.write_text("text,n\n" + "".join(f"row {i},{i}\n" for i in range(20)))
    folder = tmp_path / "files"
    for name in ("b", "a", "d", "c", "e"):
        (folder / name).mkdir(parents=True)
        for j in range(3):
            (folder / name / f"{j}.txt").write_text(f"{name}{j}")
    for path in (csv_path, folder):
        whole = _documents(str(path), ReaderOptions())
        for k in range(4):
            shard = _documents(str(path), ReaderOptions(shard_index=k, shard_count=4))
            assert [(d["id"], d["text"]) for d in shard] == [(d["id"], d["text"]) for d in whole[k::4]]
    files = [d["text"] for d in _documents(str(folder), ReaderOptions(shard_index=1, shard_count=4))]
    # Files 1, 5, 9 and 13 of the sorted walk a/0 a/1 a/2 b/0 ... e/2.
    assert [Path(str(f)).relative_to(folder.resolve()).as_posix() for f in files] == ["a/1.txt", "b/2.txt",
                                                                                       "d/0.txt", "e/1.txt"]


def test_a_shard_is_its_own_input_for_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(f'{{"text": "d{i}"}}\n' for i in range(10)))
    ident = [open_input(str(path), ReaderOptions(shard_index=k, shard_count=3)).identity() for k in range(3)]
    assert ident[0]["options"] == {"shard": [0, 3]}
    assert len({orjson.dumps(i) for i in ident}) == 3  # resuming shard 1 from shard 0's checkpoint is refused
    with pytest.raises(InputError, match="shard 3 of 3 does not exist"):
        open_input(str(path), ReaderOptions(shard_index=3, shard_count=3))
