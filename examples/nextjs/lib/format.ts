// Display helpers, exact on integers: money is formatted from minor units without floating-point maths.

export function formatMoney(amountMinor: number, currency: string): string {
  const formatter = new Intl.NumberFormat("en-GB", { style: "currency", currency: currency.toUpperCase() });
  const digits = formatter.resolvedOptions().maximumFractionDigits ?? 2;
  const negative = amountMinor < 0;
  const text = String(Math.abs(amountMinor)).padStart(digits + 1, "0");
  const decimal = digits === 0 ? text : `${text.slice(0, -digits)}.${text.slice(-digits)}`;
  // Intl formats a decimal string exactly (no conversion to a binary float).
  return formatter.format(`${negative ? "-" : ""}${decimal}` as unknown as number);
}

export function formatCredits(credits: number): string {
  return new Intl.NumberFormat("en-GB").format(credits);
}

export function formatTime(rfc3339: string | null): string {
  if (!rfc3339) return "";
  return `${rfc3339.slice(0, 10)} ${rfc3339.slice(11, 16)} UTC`;
}

const PAYMENT_STATUS_LABELS: Record<string, string> = {
  init: "awaiting payment",
  paid: "paid, crediting",
  credited: "credited",
  refunded: "refunded",
  chargeback: "charged back",
  failed: "failed",
};

export function paymentStatusLabel(status: string): string {
  return PAYMENT_STATUS_LABELS[status] ?? status;
}

const KIND_LABELS: Record<string, string> = {
  purchase: "Purchase",
  spend: "Spent",
  grant: "Grant",
  refund: "Refund",
  chargeback: "Chargeback",
  chargeback_reversal: "Chargeback reversed",
  admin_adjustment: "Adjustment",
  hold_capture: "Spent (reserved)",
};

export function transactionKindLabel(kind: string): string {
  return KIND_LABELS[kind] ?? kind;
}
