"""Short-lived, logged agent certificates (X.509-SVIDs) under an operator's intermediate CA.

Pure: :mod:`~cctf.ca.profile` (certificate profile, key-binding extension), :mod:`~cctf.ca.entries`
(CA log entries), :mod:`~cctf.ca.request` (cert-request / response, the CA's checks),
:mod:`~cctf.ca.issuer` (build certificates and revocations), :mod:`~cctf.ca.registry`
(:class:`~cctf.ca.registry.CertRegistry`, the coordinator's gate), :mod:`~cctf.ca.client` (the
agent's side). See docs/ca.md.

Issuer API (for ``natstls`` and operators)::

    issued = issuer.issue(request_bytes, subject, now_ms=..., serial=random_serial())
    # append issued.entry to the CA log, await the ack, THEN hand out issued.cert.der
    entry = issuer.revoke(agent_cert, RevocationReason.KEY_COMPROMISE, now_ms=...)
"""
