"""Small pure pieces of the distributed recorder and the importers, without processes."""

from __future__ import annotations

import torch

from trainmedic.distributed import SYNC_EVERY, NullWriter, RankSync, is_sharded, local, replication
from trainmedic.store.importers import _step_clusters


def test_replication_of_plain_and_fsdp1_flat_parameters() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    assert not is_sharded(p) and replication(p, 4) == 4.0 and local(p) is p  # DDP: a copy on every rank
    p._is_flat_param = True  # type: ignore[attr-defined]  # FSDP1's FlatParameter: a disjoint chunk
    assert is_sharded(p) and replication(p, 4) == 1.0 and local(p) is p


def test_sync_steps_count_from_watch_and_skip_after_a_failure() -> None:
    d = RankSync(0, 2)
    d.steps_at_watch = 60  # a resumed run
    assert [s for s in range(60, 200) if d.due(s)] == [60 + SYNC_EVERY, 60 + 2 * SYNC_EVERY]
    assert d.next_due(61) == 60 + SYNC_EVERY and d.next_due(110) == 160
    d.failed = "gone"
    assert not d.due(110)
    assert (
        d.gather_object([1]) is None and d._gather(torch.zeros(1).numpy()) is None
    )  # never the user's group


def test_the_null_writer_keeps_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    w = NullWriter(tmp_path / "run")
    w.add_scalar("loss", 0, 1.0)
    w.set_meta(steps=1)
    w.flush()
    assert not w._scalars and not w._meta and not (tmp_path / "run").exists()


def test_step_clusters_merge_a_train_and_a_val_value_a_step_apart() -> None:
    pts = [(s, "train/acc") for s in (19, 39, 59)] + [(s, "val/loss") for s in (20, 40, 60)]
    assert _step_clusters(pts, 3) == {19: 0, 20: 0, 39: 1, 40: 1, 59: 2, 60: 2}
    # never two values of one signal in one evaluation, however close
    assert _step_clusters([(10, "val/loss"), (11, "val/loss"), (100, "val/loss")], 3) == {
        10: 0,
        11: 1,
        100: 2,
    }
