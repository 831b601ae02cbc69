"""Small typed building blocks (torchrec style): embeddings, a wide linear part, MLP, crosses.

Shapes use B = batch size, S = number of categorical features, D = width of the concatenated
input vector x0 (all embeddings, then all dense columns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TableConfig:
    """One embedding table: ``num_embeddings`` rows of width ``dim`` for feature ``name``."""

    name: str
    num_embeddings: int
    dim: int
    zero_rows: tuple[int, ...] = ()  # rows that start at exactly zero (the unseen-id row)


class EmbeddingCollection(nn.Module):
    """One ``nn.Embedding`` per feature, looked up column by column and concatenated.

    ``forward(ids)``: ids [B, S] int64 (column j indexes table j) -> [B, sum(dim_j)].
    Tables live under ``tables.<feature name>`` so a warm start can match them by name.
    """

    def __init__(self, tables: Sequence[TableConfig], init_std: float | None = None) -> None:
        super().__init__()
        self.tables = nn.ModuleDict({t.name: nn.Embedding(t.num_embeddings, t.dim) for t in tables})
        for table in self.tables.values():
            # init_std near zero: a row that training never touches (an unseen id) stays
            # neutral. None: rows of norm ~1, like the standardised dense columns.
            assert isinstance(table, nn.Embedding)
            std = init_std if init_std is not None else 1.0 / math.sqrt(table.embedding_dim)
            nn.init.normal_(table.weight, std=std)
        with torch.no_grad():
            for t in tables:
                # The shared unseen row starts at zero: an id training never saw (or a rare one
                # before it has trained that row) adds nothing instead of random noise.
                for row in t.zero_rows:
                    self.tables[t.name].weight[row].zero_()
        self.output_dim = sum(t.dim for t in tables)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not len(self.tables):
            return ids.new_zeros((ids.shape[0], 0), dtype=torch.float32)
        return torch.cat([table(ids[:, j]) for j, table in enumerate(self.tables.values())], dim=1)


class WideLinear(nn.Module):
    """The linear part of Wide & Deep over one-hot ids: ``logit = b + sum_f w_f[id_f]``.

    ``forward(ids)``: ids [B, F] int64 (column f indexes table f) -> [B].
    Each table is an ``nn.Embedding(n_f, 1)`` (a one-hot linear layer without the one-hot).
    """

    def __init__(self, tables: Sequence[tuple[str, int]]) -> None:
        super().__init__()
        self.tables = nn.ModuleDict({name: nn.Embedding(n, 1) for name, n in tables})
        for table in self.tables.values():
            assert isinstance(table, nn.Embedding)
            nn.init.zeros_(table.weight)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.bias.expand(ids.shape[0])
        for j, table in enumerate(self.tables.values()):
            out = out + table(ids[:, j]).squeeze(-1)
        return out


class MLP(nn.Module):
    """``[Linear -> ReLU -> Dropout] * len(hidden_units)``: [B, in_dim] -> [B, hidden_units[-1]].

    With no hidden units it is the identity ([B, in_dim] -> [B, in_dim]).
    """

    def __init__(self, in_dim: int, hidden_units: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for units in hidden_units:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        self.layers = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CrossLayerV2(nn.Module):
    """DCN-V2 cross layer: ``x_{l+1} = x0 * (W x_l + b) + x_l`` (element-wise ``*``).

    x0, x_l: [B, D] -> [B, D]. Full rank: W is [D, D]. Low rank r: W = U V^T with
    V^T = ``down`` ([r, D], no bias) and U = ``up`` ([D, r], bias b [D]), so the layer costs
    2 r D instead of D^2 multiply-adds. With W = 0 and b = 0 it returns x_l unchanged.
    """

    def __init__(self, dim: int, low_rank: int | None = None) -> None:
        super().__init__()
        self.low_rank = low_rank
        if low_rank is None:
            self.linear = nn.Linear(dim, dim)
            nn.init.xavier_uniform_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        else:
            self.down = nn.Linear(dim, low_rank, bias=False)
            self.up = nn.Linear(low_rank, dim)
            nn.init.xavier_uniform_(self.down.weight)
            nn.init.xavier_uniform_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        projected = self.linear(x) if self.low_rank is None else self.up(self.down(x))
        return x0 * projected + x


class CrossLayerV1(nn.Module):
    """DCN (2017) vector cross layer: ``x_{l+1} = x0 (x_l . w) + b + x_l``.

    x0, x_l: [B, D] -> [B, D]; w, b: [D]. ``x_l . w`` is one scalar per row, so the layer
    has 2 D parameters. With w = 0 and b = 0 it returns x_l unchanged.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(max(dim, 1)))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * (x @ self.weight).unsqueeze(-1) + self.bias + x


class CrossNetwork(nn.Module):
    """``num_layers`` cross layers applied to x0: [B, D] -> x_L [B, D]."""

    def __init__(
        self, dim: int, num_layers: int, cross_type: str = "v2", low_rank: int | None = None
    ) -> None:
        super().__init__()
        if cross_type not in ("v1", "v2"):
            raise ValueError(f"cross_type must be 'v1' or 'v2', got {cross_type!r}")
        self.cross_type = cross_type
        self.layers = nn.ModuleList(
            [
                CrossLayerV2(dim, low_rank) if cross_type == "v2" else CrossLayerV1(dim)
                for _ in range(num_layers)
            ]
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x
