"""The DiT config's one check of how many GPUs can split the attention heads."""
from __future__ import annotations

import pytest

from wan_animate.distributed.animate import layout_for
from wan_animate.distributed.parallelize import ParallelConfig
from wan_animate.distributed.ulysses import check_heads
from wan_animate.errors import ParallelConfigError
from wan_animate.models.config import DiTConfig, check_head_split, head_split_sizes


def test_head_split_sizes() -> None:
    assert head_split_sizes(40) == [1, 2, 4, 5, 8, 10, 20, 40]
    assert head_split_sizes(3) == [1, 3]
    for n in (1, 2, 4, 5, 8):
        check_head_split(40, n)


@pytest.mark.parametrize("refuse", [
    lambda: check_head_split(40, 3),
    lambda: DiTConfig().check_sp_size(3),
    lambda: check_heads(40, 3),
    lambda: ParallelConfig(world_size=3).check_heads(40),
    lambda: layout_for(3, 40),
], ids=["config", "dit-config", "ulysses", "parallel-config", "pool-mesh"])
def test_every_refusal_is_the_same_error(refuse) -> None:
    with pytest.raises(ParallelConfigError) as info:
        refuse()
    assert str(info.value) == ("3 GPUs cannot split the DiT's 40 attention heads evenly (Ulysses "
                               "splits attention by heads); use a GPU count that divides 40: "
                               "[1, 2, 4, 5, 8, 10, 20, 40]")
