"""The relying-party HTTP API (FastAPI + uvicorn): ``cctf gateway``. No decision logic here: every
answer is the SDK's (:mod:`cctf.client.identity`, :mod:`cctf.client.sdk`)."""
