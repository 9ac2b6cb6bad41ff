"""Identity rules (pure, no I/O; time passed in as ms): SPIFFE IDs, X509-SVIDs, JWT-SVIDs and OIDC
ID tokens, SPIFFE bundles and federation, OIDC issuers, identity targets and the trust negotiator.
Errors: :class:`cctf.identity.errors.IdentityError` with a reason code. See docs/identity.md."""
