"""RFC 9162 Merkle log core (pure): hashing, proofs and verifiers, C2SP checkpoints and signed notes.

See ``docs/transparency-log.md``.
"""
