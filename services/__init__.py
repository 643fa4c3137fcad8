"""The credits suite's services: ledger (gRPC), webhook gateway (aiohttp) and reconciler."""
