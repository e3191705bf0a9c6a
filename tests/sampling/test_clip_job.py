"""The per-clip message of the pool: typed, moved between devices as a copy, pickled intact."""
from __future__ import annotations

import pickle

import pytest
import torch

from wan_animate.sampling.clip_job import ClipJob
from wan_animate.sampling.conditioning import ClipConditioning, VideoConditioning


def _job(**kw) -> ClipJob:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    video = VideoConditioning(clip_fea=r(1, 257, 8), context=r(1, 261, 8), context_null=None,
                              y_ref=r(1, 20, 1, 4, 4), motion_null=r(1, 2, 3, 8))
    clip = ClipConditioning(y=r(1, 20, 2, 4, 4), pose_latents=r(1, 16, 2, 4, 4), motion=r(1, 2, 3, 8))
    base = dict(index=1, clips=3, solver="unipc", steps=4, shift=5.0, guide=1.0,
                noise=r(1, 16, 2, 4, 4), video=video, clip=clip)
    return ClipJob(**{**base, **kw})


def test_to_copies_every_tensor_and_leaves_the_original() -> None:
    job = _job()
    moved = job.to(torch.device("meta"))
    assert moved.noise.is_meta and moved.video.clip_fea.is_meta and moved.clip.motion.is_meta
    assert moved.video.context_null is None
    assert not job.noise.is_meta and not job.video.y_ref.is_meta and not job.clip.y.is_meta
    assert (moved.index, moved.clips, moved.solver, moved.guide) == (1, 3, "unipc", 1.0)


def test_pickles_as_the_pool_broadcast_sends_it() -> None:
    job = _job()
    back = pickle.loads(pickle.dumps(job))
    assert isinstance(back, ClipJob) and back.steps == 4
    assert torch.equal(back.clip.pose_latents, job.clip.pose_latents)
    assert torch.equal(back.video.motion_null, job.video.motion_null)


@pytest.mark.parametrize("kw", [{"index": -1}, {"clips": 0}, {"noise": torch.zeros(16, 2, 4, 4)}])
def test_bad_fields_fail_where_the_job_is_built(kw) -> None:
    with pytest.raises(ValueError):
        _job(**kw)
