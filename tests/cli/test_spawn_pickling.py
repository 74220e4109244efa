"""The command's check that ``ddp_spawn`` can pickle every callback into its worker processes."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging

from lit_transfer.callbacks import LayerFreezing
from lit_transfer.cli.spawn_pickling import check_callbacks_reach_workers


def _average(average: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return 0.5 * (average + current)


def test_an_unpicklable_callback_is_refused_only_where_it_would_be_pickled() -> None:
    closure = EMAWeightAveraging(decay=0.9)  # holds torch's get_ema_avg_fn closure
    with pytest.raises(ValueError, match=r"The callback EMAWeightAveraging cannot be sent to the worker processes"):
        check_callbacks_reach_workers("ddp_spawn", [LayerFreezing("linear_probe"), closure])
    check_callbacks_reach_workers("ddp", [closure])  # the subprocess launcher pickles nothing
    check_callbacks_reach_workers("ddp_spawn", [WeightAveraging(avg_fn=_average), LayerFreezing("linear_probe")])
