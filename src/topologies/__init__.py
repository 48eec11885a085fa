"""The journey, one stage per script, and the launcher that runs them as OS processes.

- ``topology.py``: how a stage is declared (components, flags, ``{name}`` references);
- ``launcher.py``: the process supervisor (start in order, wire addresses, endpoint
  table, run directory, service registry, faults by name, clean stop, no orphans);
- ``process.py``: one component as one OS process, up to its ready line;
- ``stages.py``: the catalogue of stages, in the journey's order;
- ``single_server.py``, ``separate_db.py``, ``load_balanced.py``, ``replicated.py``,
  ``cached.py``, ``stateless.py``, ``multi_dc.py``, ``queued.py``, ``sharded.py``: the
  stages, built from the shared pieces in ``tiers.py`` (``sharded.py`` is also the shard
  router's process in its stage, ``multi_dc.py`` the DNS server's, whose rules it writes);
- ``autoscale.py``: the autoscaler, a process of its own that sizes the queued stage's
  workers by the queue's depth, or the stateless stage's web tier behind the lb by the
  requests in flight (its rule, pure, in ``autoscale_policy.py``);
- ``failover.py``: the failover controller, a process of its own in the replicated
  stages (``python -m topologies.failover``);
- ``link.py``: an emulated long network link (a TCP relay adding latency, changed at
  runtime by a scenario's ``delay``), a process of its own (``python -m topologies.link``);
- ``scenario.py`` (and ``scenarios/*.toml``): fault timelines played during a load run;
  ``timeline.py``: the users' seconds around each fault; ``audit.py``: acknowledged writes found
  afterwards and stale reads; ``figures.py``: each stage's figures and the journey table;
- ``journey.py``: ``scalelab journey``, every stage under the same load, one table and
  a chart;
- ``cli.py``: the ``scalelab`` command.
"""
