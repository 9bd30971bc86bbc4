"""The Faktory Work Protocol: Faktory clients in any language push to and fetch from jobq (``--faktory-port``)."""
