import { randomUUID } from "node:crypto";

import type { NextRequest } from "next/server";

import { signedInUser } from "@/lib/auth";
import { loadConfig } from "@/lib/config";
import { createCheckout } from "@/lib/gateway";
import { NO_STORE, isSameOrigin, refused, seeOther } from "@/lib/http";
import { PENDING_CHECKOUT_COOKIE, PENDING_CHECKOUT_LIFETIME_SECONDS, encodePendingCheckout } from "@/lib/pending-checkout";

export const dynamic = "force-dynamic";

const IDEMPOTENCY_KEY_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;

// POST /api/checkout (form: package_id, idempotency_key): the "Buy" button. The gateway creates the
// Checkout Session with the user's JWT; the browser is sent on to the session's URL. The key comes
// from the rendered form, so a double click or a resubmitted form opens the same session, not two.
export async function POST(request: NextRequest): Promise<Response> {
  if (!isSameOrigin(request)) return refused(403, "cross-origin form posts are refused");
  const user = await signedInUser();
  if (!user) return seeOther("/credits");
  const form = await request.formData();
  const packageId = form.get("package_id");
  const idempotencyKey = form.get("idempotency_key");
  if (typeof packageId !== "string" || !loadConfig().packages.some((pack) => pack.packageId === packageId)) {
    return seeOther("/credits?error=UNKNOWN_PACKAGE");
  }
  const key = typeof idempotencyKey === "string" && IDEMPOTENCY_KEY_PATTERN.test(idempotencyKey) ? idempotencyKey : randomUUID();
  const startedAt = new Date().toISOString();
  const result = await createCheckout(user.jwt, packageId, key);
  if (!result.ok) {
    const { code, retryAfterSeconds } = result.failure;
    const retry = retryAfterSeconds === null ? "" : `&retry_after=${retryAfterSeconds}`;
    return seeOther(`/credits?error=${encodeURIComponent(code)}${retry}`);
  }
  const target = new URL(result.value.url);
  if (target.protocol !== "https:" && target.protocol !== "http:") return seeOther("/credits?error=PAYMENT_PROVIDER_ERROR");
  const pending = encodePendingCheckout({ paymentId: result.value.payment_id, packageId, startedAt });
  const secure = request.nextUrl.protocol === "https:" ? "; Secure" : "";
  const cookie = `${PENDING_CHECKOUT_COOKIE}=${pending}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${PENDING_CHECKOUT_LIFETIME_SECONDS}${secure}`;
  return new Response(null, { status: 303, headers: { Location: target.toString(), "Set-Cookie": cookie, ...NO_STORE } });
}
