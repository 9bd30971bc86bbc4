"""Generated from ``proto/jobq/v1/jobq.proto`` by ``python -m jobq.rpc.generate``; never edited by hand."""
