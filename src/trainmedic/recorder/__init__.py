"""The recorder behind :func:`trainmedic.watch`, one file per concern (:class:`trainmedic.watch.Run` is the facade
that users hold; its methods delegate here):

* :mod:`.common` — constants, the fail-open boundary of the public methods, conversions of user values;
* :mod:`.hooks` — the step hooks' hot path (optimizer pre-/post-step hooks, the forward-input hook);
* :mod:`.meter` — the opt-in overhead meter (``overhead_budget=``); the default cadence is
  :mod:`trainmedic.cadence`, a function of the step alone;
* :mod:`.evaluation` — ``run.evaluate`` and the running training metrics;
* :mod:`.flushing` — buffering and flushing to the store;
* :mod:`.sync` — ``torch.distributed`` syncs and gathers.

Attaching (``Run.__init__``, ``Run.watch``), ``log``, ``close`` and the public surface stay in
:mod:`trainmedic.watch`.
"""
