"""The policy engine: statistical detectors, rules and safe mode (pure: no I/O, time as numbers).

* :mod:`cctf.policy.baseline`: an EWMA mean/variance baseline per series and its z-score.
* :mod:`cctf.policy.detectors`: the rules over decisions, LKG events and identity evidence, each
  alarm with a one-line ``why``.
* :mod:`cctf.policy.safemode`: the safe-mode state machine per scope (hysteresis) and the answer
  hold (a changed answer must hold ``hold_rounds`` rounds before it is TRUSTED).
* :mod:`cctf.policy.engine`: both together, as the coordinator's policy stage calls them.

See ``docs/policy.md``.
"""
