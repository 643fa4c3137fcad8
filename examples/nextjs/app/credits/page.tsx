import { randomUUID } from "node:crypto";

import { cookies } from "next/headers";

import { signedInUser } from "@/lib/auth";
import { loadConfig } from "@/lib/config";
import { formatCredits, formatMoney, formatTime, paymentStatusLabel, transactionKindLabel } from "@/lib/format";
import { type GatewayFailure, type MyCredits, type Payment, fetchMyCredits } from "@/lib/gateway";
import { PENDING_CHECKOUT_COOKIE, decodePendingCheckout, findPendingPayment } from "@/lib/pending-checkout";

export const dynamic = "force-dynamic"; // Per-user data: rendered on the server for each request.

const PENDING_REFRESH_SECONDS = 2;
const CURSOR_PATTERN = /^[A-Za-z0-9_-]{1,128}={0,2}$/;

type SearchParams = Record<string, string | string[] | undefined>;

function single(value: string | string[] | undefined): string | null {
  return typeof value === "string" ? value : null;
}

export default async function CreditsPage({ searchParams }: { searchParams: Promise<SearchParams> }) {
  const params = await searchParams;
  const user = await signedInUser();
  if (!user) return <SignedOut expired={false} />;
  const cursorParam = single(params.cursor);
  const cursor = cursorParam !== null && CURSOR_PATTERN.test(cursorParam) ? cursorParam : null;
  const result = await fetchMyCredits(user.jwt, cursor);
  if (!result.ok) return <Failure failure={result.failure} />;
  const credits = result.value;
  const pendingCookie = (await cookies()).get(PENDING_CHECKOUT_COOKIE)?.value;
  return (
    <>
      <h1>Your credits</h1>
      <CheckoutNotice checkout={single(params.checkout)} pendingCookie={pendingCookie} payments={credits.payments} />
      <PurchaseError code={single(params.error)} retryAfter={single(params.retry_after)} />
      <Balance credits={credits} />
      <BuyPacks />
      <Payments payments={credits.payments} />
      <History credits={credits} cursor={cursor} />
    </>
  );
}

function SignedOut({ expired }: { expired: boolean }) {
  return (
    <section data-state="signed-out">
      <h1>{expired ? "Your session has ended" : "You are signed out"}</h1>
      <p>Sign in to see your credits and buy more.</p>
      <p>
        <a href="/sign-in">Sign in</a>
      </p>
    </section>
  );
}

function Failure({ failure }: { failure: GatewayFailure }) {
  if (failure.kind === "signed_out") return <SignedOut expired />;
  if (failure.kind === "rate_limited") {
    return (
      <section className="notice warning" data-state="rate-limited">
        <h1>Slow down a little</h1>
        <p>
          Too many requests in a short time. Wait {failure.retryAfterSeconds} seconds, then <a href="/credits">try again</a>.
        </p>
      </section>
    );
  }
  if (failure.kind === "unavailable") {
    return (
      <section className="notice error" data-state="unavailable">
        <h1>Your credits are unavailable right now</h1>
        <p>
          Nothing is lost: your balance and purchases are safe. Try again in {failure.retryAfterSeconds} seconds:{" "}
          <a href="/credits">reload</a>.
        </p>
      </section>
    );
  }
  return (
    <section className="notice error" data-state="error">
      <h1>Something went wrong</h1>
      <p>
        The credits service refused the request ({failure.code}). <a href="/credits">Reload</a>
      </p>
    </section>
  );
}

function CheckoutNotice({ checkout, pendingCookie, payments }: { checkout: string | null; pendingCookie: string | undefined; payments: Payment[] }) {
  if (checkout === "cancelled") {
    return <p className="notice info" data-state="checkout-cancelled">Checkout cancelled. Nothing was charged.</p>;
  }
  if (checkout !== "success") return null;
  const pending = decodePendingCheckout(pendingCookie);
  const payment = pending ? findPendingPayment(pending, payments) : null;
  if (payment?.status === "credited") {
    return (
      <p className="notice success" data-state="purchase-credited">
        Payment received: {formatCredits(payment.credits)} credits added to your balance.
      </p>
    );
  }
  if (payment?.status === "failed") {
    return <p className="notice error" data-state="purchase-failed">The payment failed. Nothing was charged; you can try again.</p>;
  }
  if (payment && payment.status !== "init" && payment.status !== "paid") {
    return <p className="notice info" data-state="purchase-settled">This purchase is {paymentStatusLabel(payment.status)}.</p>;
  }
  return (
    <p className="notice info" data-state="purchase-pending">
      {/* React hoists this into <head>: the page reloads until the webhook has landed. */}
      <meta httpEquiv="refresh" content={String(PENDING_REFRESH_SECONDS)} />
      Thank you! Your payment is being confirmed; your credits appear here in a moment.
    </p>
  );
}

const PURCHASE_ERRORS: Record<string, string> = {
  RATE_LIMITED: "Too many requests: wait a moment, then buy again.",
  UNAVAILABLE: "Purchases are unavailable right now; nothing was charged. Try again shortly.",
  UNKNOWN_PACKAGE: "That credit pack does not exist.",
  ACCOUNT_ANONYMIZED: "This account was erased; it can no longer buy credits.",
  PAYMENT_PROVIDER_ERROR: "The payment provider refused the purchase; nothing was charged.",
};

function PurchaseError({ code, retryAfter }: { code: string | null; retryAfter: string | null }) {
  if (code === null) return null;
  const message = PURCHASE_ERRORS[code] ?? `The purchase could not start (${code.slice(0, 40)}).`;
  const wait = retryAfter !== null && /^\d{1,4}$/.test(retryAfter) ? ` (retry in ${retryAfter} s)` : "";
  return (
    <p className="notice error" data-state="purchase-error">
      {message}
      {wait}
    </p>
  );
}

function Balance({ credits }: { credits: MyCredits }) {
  return (
    <section>
      <h2>Balance</h2>
      <p className="balance">
        <span data-testid="balance">{formatCredits(credits.balance)}</span> credits
      </p>
      {credits.held > 0 && <p>{formatCredits(credits.available)} available ({formatCredits(credits.held)} reserved for work in progress)</p>}
      {credits.next_expiry && <p data-testid="next-expiry">{credits.next_expiry.text}</p>}
      {credits.balance < 0 && <p className="notice warning">Credits were taken back after a refund or dispute: buy a pack to settle the balance.</p>}
      {credits.status === "anonymized" && <p className="notice warning">This account was erased.</p>}
    </section>
  );
}

function BuyPacks() {
  return (
    <section>
      <h2>Buy credits</h2>
      <div className="packs">
        {loadConfig().packages.map((pack) => (
          <form key={pack.packageId} className="pack" action="/api/checkout" method="post">
            <p>
              <strong>{formatCredits(pack.credits)} credits</strong>
              <br />
              {formatMoney(pack.amountMinor, pack.currency)}
            </p>
            <input type="hidden" name="package_id" value={pack.packageId} />
            {/* One key per rendered form: resubmitting it reopens the same Checkout Session. */}
            <input type="hidden" name="idempotency_key" value={randomUUID()} />
            <button type="submit" data-testid={`buy-${pack.packageId}`}>
              Buy
            </button>
          </form>
        ))}
      </div>
    </section>
  );
}

function Payments({ payments }: { payments: Payment[] }) {
  return (
    <section>
      <h2>Payments</h2>
      {payments.length === 0 ? (
        <p>No purchases yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Date</th>
              <th>Pack</th>
              <th className="number">Credits</th>
              <th className="number">Amount</th>
              <th>Status</th>
            </tr>
          </thead>
          <tbody>
            {payments.map((payment) => (
              <tr key={payment.id} data-testid="payment">
                <td>{formatTime(payment.created_at)}</td>
                <td>{payment.package_id}</td>
                <td className="number">{formatCredits(payment.credits)}</td>
                <td className="number">{formatMoney(payment.amount_minor, payment.currency)}</td>
                <td>
                  <span className={`status ${payment.status}`} data-testid="payment-status">
                    {paymentStatusLabel(payment.status)}
                  </span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function History({ credits, cursor }: { credits: MyCredits; cursor: string | null }) {
  return (
    <section>
      <h2>History</h2>
      {credits.transactions.length === 0 ? (
        <p>No credit movements yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Date</th>
              <th>What</th>
              <th className="number">Credits</th>
              <th className="number">Balance after</th>
            </tr>
          </thead>
          <tbody>
            {credits.transactions.map((entry) => (
              <tr key={entry.id} data-testid="transaction">
                <td>{formatTime(entry.created_at)}</td>
                <td>{transactionKindLabel(entry.kind)}</td>
                <td className="number">{entry.delta > 0 ? `+${formatCredits(entry.delta)}` : formatCredits(entry.delta)}</td>
                <td className="number">{formatCredits(entry.balance_after)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <p>
        {cursor !== null && <a href="/credits">Newest</a>}{" "}
        {credits.next_cursor !== null && <a href={`/credits?cursor=${encodeURIComponent(credits.next_cursor)}`}>Older</a>}
      </p>
    </section>
  );
}
