"""Payments: the Stripe payment lifecycle (open, settle, fail, expire, refund, dispute) and its listing."""
