"""Lookup tables are not judged against He/Xavier: nn.Embedding and nn.EmbeddingBag start at N(0, 1) by default,
about 40x the Xavier std of a table that wide, and train well from there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import trainmedic as tm


class BagOfWords(nn.Module):
    def __init__(self, table: type[nn.Module]) -> None:
        super().__init__()
        self.emb = table(200, 32, mode="mean") if table is nn.EmbeddingBag else table(200, 32)
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.emb(tokens) if isinstance(self.emb, nn.EmbeddingBag) else self.emb(tokens).mean(1)
        return self.head(e)


@pytest.mark.parametrize("table", [nn.Embedding, nn.EmbeddingBag])
def test_default_embedding_init_is_not_bad_initialization(tmp_path: Path, table: type[nn.Module]) -> None:
    torch.manual_seed(0)
    tokens = torch.randint(0, 200, (600, 12))
    y = (tokens < 100).sum(1).gt(6).long()  # the label: more tokens from the first half of the vocabulary
    model = BagOfWords(table)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    run = tm.watch(model, opt, run_dir=tmp_path / "r", quiet=True)
    for _epoch in range(15):
        for i in range(0, 500, 50):
            loss = nn.functional.cross_entropy(model(tokens[i : i + 50]), y[i : i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
        with torch.no_grad():
            run.evaluate("val", targets=y[500:], outputs=model(tokens[500:]))
    run.close()
    d = tm.diagnose(tmp_path / "r")
    assert "bad_initialization" not in {f.code for f in d.findings}
    # and the check still sees a hidden Linear layer started far too large next to the table
    with torch.no_grad():
        model.head[0].weight.mul_(100.0)
    run = tm.watch(model, opt, run_dir=tmp_path / "big", quiet=True)
    loss = nn.functional.cross_entropy(model(tokens[:50]), y[:50])
    opt.zero_grad()
    loss.backward()
    opt.step()
    run.log(loss=loss)
    run.close()
    found = [f for f in tm.diagnose(tmp_path / "big").findings if f.code == "bad_initialization"]
    assert found and "head.0" in found[0].message and "emb" not in found[0].message.split(";")[0]
