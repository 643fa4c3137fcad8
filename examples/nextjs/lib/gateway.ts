import "server-only";

import { loadConfig } from "@/lib/config";

// Server-side calls to the webhook gateway, with the user's JWT. Every failure becomes one of the
// states a person can act on; the gateway's error body is `{"error": {"code", "message"}}`.

// Above the gateway's own bound on a request (3 ledger attempts of 3 s each), so that a ledger outage
// reaches the person as the gateway's 503, with its Retry-After, rather than as our timeout.
export const GATEWAY_TIMEOUT_MS = 12_000;
export const TRANSACTIONS_PAGE_SIZE = 10;
const RETRY_AFTER_SECONDS_DEFAULT = 2;
const RETRY_AFTER_SECONDS_MAX = 3600;

export type Transaction = {
  id: number;
  delta: number;
  balance_after: number;
  kind: string;
  reason: string;
  created_at: string | null;
};

export type Payment = {
  id: number;
  package_id: string;
  credits: number;
  amount_minor: number;
  currency: string;
  status: string;
  created_at: string | null;
};

export type Grant = {
  id: number;
  category: string; // "paid" | "promotional"
  priority: number;
  amount: number;
  remaining: number;
  reserved: number;
  expires_at: string | null;
  created_at: string | null;
  payment_id: number | null;
};

// The soonest expiry of the credits left; `text` is the sentence to show ("100 credits expire on 2027-01-31").
export type NextExpiry = { credits: number; expires_at: string; date: string; text: string };

export type MyCredits = {
  user_id: string;
  balance: number;
  held: number;
  available: number;
  status: string;
  transactions: Transaction[];
  next_cursor: string | null;
  payments: Payment[];
  grants: Grant[];
  debt: number;
  next_expiry: NextExpiry | null;
};

export type Checkout = { checkout_session_id: string; url: string; payment_id: number };

export type GatewayFailure = {
  kind: "signed_out" | "rate_limited" | "unavailable" | "refused";
  status: number;
  code: string;
  message: string;
  retryAfterSeconds: number | null;
};

export type GatewayResult<T> = { ok: true; value: T } | { ok: false; failure: GatewayFailure };

export async function fetchMyCredits(jwt: string, cursor: string | null): Promise<GatewayResult<MyCredits>> {
  const url = new URL("/me/credits", loadConfig().gatewayUrl);
  url.searchParams.set("limit", String(TRANSACTIONS_PAGE_SIZE));
  if (cursor) url.searchParams.set("cursor", cursor);
  return call<MyCredits>(url, { headers: authorization(jwt) });
}

export async function createCheckout(jwt: string, packageId: string, idempotencyKey: string): Promise<GatewayResult<Checkout>> {
  const url = new URL("/checkout", loadConfig().gatewayUrl);
  return call<Checkout>(url, {
    method: "POST",
    headers: { ...authorization(jwt), "Content-Type": "application/json", "Idempotency-Key": idempotencyKey },
    body: JSON.stringify({ package_id: packageId }),
  });
}

function authorization(jwt: string): Record<string, string> {
  return { Authorization: `Bearer ${jwt}`, Accept: "application/json" };
}

async function call<T>(url: URL, init: RequestInit): Promise<GatewayResult<T>> {
  let response: Response;
  try {
    response = await fetch(url, { ...init, cache: "no-store", signal: AbortSignal.timeout(GATEWAY_TIMEOUT_MS) });
  } catch {
    // Refused, reset or timed out: for the person it is the same as a 503.
    return { ok: false, failure: failure(503, "UNAVAILABLE", "the credits service cannot be reached", null) };
  }
  const body: unknown = await response.json().catch(() => null);
  if (response.ok && body !== null) return { ok: true, value: body as T };
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code = typeof error?.code === "string" ? error.code : `HTTP_${response.status}`;
  const message = typeof error?.message === "string" ? error.message : response.statusText;
  return { ok: false, failure: failure(response.status, code, message, response.headers.get("Retry-After")) };
}

function failure(status: number, code: string, message: string, retryAfter: string | null): GatewayFailure {
  const kind: GatewayFailure["kind"] =
    status === 401 ? "signed_out" : status === 429 ? "rate_limited" : status === 503 || status === 502 || status === 504 ? "unavailable" : "refused";
  const seconds = retryAfter !== null && /^\d{1,6}$/.test(retryAfter) ? Number(retryAfter) : null;
  const retryAfterSeconds =
    kind === "rate_limited" || kind === "unavailable" ? Math.min(seconds ?? RETRY_AFTER_SECONDS_DEFAULT, RETRY_AFTER_SECONDS_MAX) : null;
  return { kind, status, code, message, retryAfterSeconds };
}
