"""Webhook gateway: the suite's aiohttp HTTP edge (Stripe webhooks, the BFF's routes, admin routes).

It owns nothing persistent: every money movement is an idempotent ledger RPC. The edge building
blocks (error bodies, JWT auth, CORS, rate limiting, their settings) live in `http_errors`,
`auth`, `cors`, `ratelimit` and `edge_config`.
"""
