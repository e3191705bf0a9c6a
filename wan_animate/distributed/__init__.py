"""Multi-device execution: a persistent worker pool, Ulysses attention, FSDP2 sharding.

The only package that imports ``torch.distributed``. Modules:

- :mod:`.protocol`: ``PoolSpec`` and the control-channel messages (``Job``, ``Cancel``,
  ``Shutdown``, ``Status``, ``Ready``, ``StepEvent``, ``Done``, ``Failed``) and errors
  (``WorkerError``, ``WorkerDied``, ``PoolClosed``).
- :mod:`.pool`: ``WorkerPool`` (parent side: spawn, handshake, submit, cancel, death watch, close).
- :mod:`.worker`: ``worker_main`` (one loop per rank), ``WorkerEnv``, ``JobContext``
  (``ctx.step(clip, step, total)``), ``InlineExecutor`` (same jobs under ``torchrun``).
- :mod:`.mesh`: ``Axis``, ``build_mesh`` (``(cfg, sp)`` mesh + flattened ``fsdp``),
  ``backend_for``.
- :mod:`.endpoints`: where a spawned pool listens (loopback only): ``rendezvous_store``,
  ``pin_to_loopback``, ``free_port``.
- :mod:`.ulysses`: ``UlyssesSequenceParallel`` (the ``SequenceParallel`` layout) and
  ``UlyssesAttention``; ``valid_sp_sizes``, ``check_heads``.
- :mod:`.parallelize`: ``ParallelConfig``, ``parallelize_dit`` (SP layout -> ``fully_shard``
  per block -> root), ``shard_units`` (e.g. for umT5 blocks).
- :mod:`.loading`: ``load_local_shards`` (each rank reads only its rows), ``SafetensorsSource``.

Nothing is imported here, so ``import wan_animate.distributed`` stays cheap.
"""
