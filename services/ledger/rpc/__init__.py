"""What every RPC goes through: the call interceptor, auth, decoding, status, paging tokens, timestamps."""
