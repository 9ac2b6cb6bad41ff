"""Log monitoring (issue #9 scopes 3 and 6): ``cctf log serve|verify|head|proof|consistency``, the log
API over NATS request-reply and its client. Thin adapters over :mod:`cctf.translog` (pure) and
:mod:`cctf.bus.logstream`."""
