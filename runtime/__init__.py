"""The runtime: a bit-exact simulator of the pentary ISA, its profiler and trace export, and ``pcc run``.

Modules: ``simulator`` (:class:`~pcc.runtime.simulator.Simulator`, :func:`~pcc.runtime.simulator.run_program`),
``tensor`` (the tensor instructions), ``boundary`` (quantising inputs, dequantising outputs), ``profile``
(:class:`~pcc.runtime.profile.Profile`, the energy table), ``trace`` (Chrome trace-event JSON), ``cli``
(``pcc run``). docs/runtime.md describes them.
"""
