"""Every hard size cap of the wire contract, in one place.

Decoders check these *before* doing work proportional to the input, so an oversized or hostile message
costs at most one length comparison.
"""

from __future__ import annotations

from typing import Final

#: Largest envelope accepted from the bus, in bytes (the NATS server's max_payload is 1 MiB).
MAX_ENVELOPE_BYTES: Final = 512 * 1024
#: Largest payload carried inside one envelope.
MAX_PAYLOAD_BYTES: Final = MAX_ENVELOPE_BYTES - 16 * 1024
#: Largest NATS subject we build or accept.
MAX_SUBJECT_BYTES: Final = 1024
#: Votes in one ballot. An agent with more votes in a round (names × resolvers) sends several ballots.
MAX_VOTES_PER_BALLOT: Final = 4096
#: Ballots (parts) one agent sends in one round, and so votes of one agent in one round.
MAX_BALLOTS_PER_ROUND: Final = 64
MAX_VOTES_PER_ROUND: Final = MAX_VOTES_PER_BALLOT * MAX_BALLOTS_PER_ROUND
#: Entries in one canonical answer, and the length of each entry.
MAX_ANSWER_ENTRIES: Final = 64
MAX_ANSWER_ENTRY_CHARS: Final = 512
#: Extended DNS Error codes kept per vote.
MAX_EDE_CODES: Final = 8
#: Voters listed in one verdict, and vote digests.
MAX_VOTERS: Final = 64
#: Identifiers (agent, coordinator, resolver, region, key id).
MAX_ID_CHARS: Final = 64
#: DNS presentation-format name length (253 plus a trailing dot), the bound of a ``qname`` field.
MAX_QNAME_CHARS: Final = 254
#: RFC 1035 bounds that every normalised name meets: UTF-8 octets of the name without its trailing
#: dot (a 255-octet wire form), and octets of one label.
MAX_NAME_OCTETS: Final = 253
MAX_LABEL_OCTETS: Final = 63
#: Longest name token in a subject; a name whose escaped token would be longer uses the digest form.
MAX_NAME_TOKEN_CHARS: Final = 253
#: Nonce length in bytes.
NONCE_BYTES: Final = 16
#: Signatures per authenticator (one per suite component).
MAX_SIGNATURES: Final = 4
#: Largest single signature (ML-DSA-65 is 3309 bytes).
MAX_SIGNATURE_BYTES: Final = 8192
#: Identity evidence (``cctf.bus_schemas.evidence``): observations in one evidence ballot (64 of the
#: largest possible observation, about 4.4 KB each, stay well below ``MAX_PAYLOAD_BYTES``), and evidence
#: ballots (parts) one agent sends in one round.
MAX_OBSERVATIONS_PER_BALLOT: Final = 64
MAX_EVIDENCE_BALLOTS_PER_ROUND: Final = 64
#: Characters of an identity subject (trust domain, issuer URL, SPIFFE ID: the SPIFFE limit of 2048
#: bytes; these strings are ASCII) and of a presented SPIFFE ID.
MAX_IDENTITY_SUBJECT_CHARS: Final = 2048
#: Characters of an observation's reason code.
MAX_DETAIL_CHARS: Final = 64
#: Largest key / authority count an observation states.
MAX_IDENTITY_KEYS: Final = 65535
