"""The coordinator's pure stages, one job each (no I/O; time only as numbers passed in).

    ingest (fair per-region queues) -> verify (envelope, ballot, names) -> tally -> decide (verdict,
    message id) -> sign (one envelope per verdict region) -> [publish: cctf.bus.publisher]
    -> acks (settle every delivery: ack / term(reason) / in-progress / nak at stop)

``cctf.coordinator.service`` wires them to the bus adapters (``cctf.bus.consumer``,
``cctf.bus.publisher``); see ``docs/architecture.md``, section *Coordinator pipeline*.
"""
