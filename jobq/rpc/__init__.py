"""jobq's gRPC API (package jobq.v1), served beside HTTP from the same process and event loop.

``jobq.rpc.server.start_grpc_server`` starts it; ``proto/jobq/v1/jobq.proto`` is
the contract and ``docs/grpc.md`` the guide. This package imports nothing, so
``python -m jobq.rpc.generate`` runs even when the generated code is missing.
"""
