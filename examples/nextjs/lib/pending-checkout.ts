import "server-only";

import type { Payment } from "@/lib/gateway";

// The purchase a person just started, remembered in a cookie so that the return page can show it as
// pending until the webhook lands. The gateway's payments carry no Checkout Session id, and the
// ledger may merge the payment opened at checkout with the one the first webhook made (keeping the
// other's id), so the payment is found by id, or else by package and creation time.

export const PENDING_CHECKOUT_COOKIE = "credits_pending_checkout";
export const PENDING_CHECKOUT_LIFETIME_SECONDS = 3600;
const CLOCK_SLACK_MS = 60_000; // The ledger's clock and this server's may differ a little.

export type PendingCheckout = { paymentId: number; packageId: string; startedAt: string };

export function encodePendingCheckout(pending: PendingCheckout): string {
  return Buffer.from(JSON.stringify(pending)).toString("base64url");
}

export function decodePendingCheckout(value: string | undefined): PendingCheckout | null {
  if (!value || value.length > 512) return null;
  try {
    const parsed = JSON.parse(Buffer.from(value, "base64url").toString("utf8")) as Partial<PendingCheckout>;
    if (!Number.isSafeInteger(parsed.paymentId) || typeof parsed.packageId !== "string" || typeof parsed.startedAt !== "string") return null;
    return parsed as PendingCheckout;
  } catch {
    return null;
  }
}

export function findPendingPayment(pending: PendingCheckout, payments: Payment[]): Payment | null {
  const byId = payments.find((payment) => payment.id === pending.paymentId);
  if (byId) return byId;
  const since = Date.parse(pending.startedAt) - CLOCK_SLACK_MS;
  return (
    payments.find(
      (payment) => payment.package_id === pending.packageId && payment.created_at !== null && Date.parse(payment.created_at) >= since,
    ) ?? null
  );
}
