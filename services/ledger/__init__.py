"""The ledger: a grpc.aio service that alone owns the credits database."""
