import "server-only";

import { createHmac, timingSafeEqual } from "node:crypto";

import { ConfigError } from "@/lib/config";

// DEVELOPMENT ONLY. A user picker stands in for the host app's real sign-in: it sets a signed cookie
// naming a user id, and each server-side call to the gateway mints a short-lived user JWT (HS256,
// `sub` = that user id) with the suite's development JWT secret.
//
// The fence: it is on only when DEV_SIGN_IN=1 is set explicitly (in `next dev` as in `next start`).
// Off, the sign-in route answers 404, the cookie is ignored and no token is ever minted here: a
// production deployment gets its users' JWTs from its own auth (lib/auth.ts), never from this file.

export const DEV_SESSION_COOKIE = "credits_dev_session";
export const DEV_SESSION_LIFETIME_SECONDS = 8 * 3600;
export const DEV_TOKEN_LIFETIME_SECONDS = 5 * 60;
export const DEV_USERS = ["alice", "bob", "carol"] as const;
const USER_ID_PATTERN = /^[\x21-\x7e]{1,64}$/; // The ledger's user ids: printable ASCII without spaces.
const SECRET_BYTES_MIN = 32; // The gateway refuses shorter HS256 secrets.

export type DevSettings = { jwtSecret: string; audience: string; issuer: string | undefined; sessionSecret: string };

let settings: DevSettings | undefined;

export function devSignInEnabled(): boolean {
  return process.env.DEV_SIGN_IN === "1";
}

export function isValidDevUserId(userId: string): boolean {
  return USER_ID_PATTERN.test(userId);
}

export function devSettings(): DevSettings {
  if (!devSignInEnabled()) throw new Error("the development sign-in is off (DEV_SIGN_IN is not 1)");
  if (settings) return settings;
  const jwtSecret = process.env.DEV_JWT_SECRET ?? "";
  if (Buffer.byteLength(jwtSecret) < SECRET_BYTES_MIN) {
    throw new ConfigError(`DEV_JWT_SECRET must be the suite's JWT_SECRET (at least ${SECRET_BYTES_MIN} bytes) when DEV_SIGN_IN=1`);
  }
  // Derived, not random: route handlers and pages are separate bundles with their own module state,
  // so every one of them must arrive at the same key.
  const sessionSecret = process.env.DEV_SESSION_SECRET || hmac(jwtSecret, "credits example: dev session cookie key");
  settings = {
    jwtSecret,
    audience: process.env.DEV_JWT_AUDIENCE || "credits",
    issuer: process.env.DEV_JWT_ISSUER || undefined,
    sessionSecret,
  };
  return settings;
}

function hmac(key: string, text: string): string {
  return createHmac("sha256", key).update(text).digest("base64url");
}

/** The cookie value for a signed-in user: `<user id base64url>.<expiry seconds>.<HMAC>`. */
export function devSessionCookieValue(userId: string, nowSeconds = Math.floor(Date.now() / 1000)): string {
  const payload = `${Buffer.from(userId).toString("base64url")}.${nowSeconds + DEV_SESSION_LIFETIME_SECONDS}`;
  return `${payload}.${hmac(devSettings().sessionSecret, payload)}`;
}

/** The user id of a dev session cookie, or null (off, missing, forged or expired). */
export function devSessionUserId(cookieValue: string | undefined): string | null {
  if (!devSignInEnabled() || !cookieValue) return null;
  const parts = cookieValue.split(".");
  if (parts.length !== 3) return null;
  const [encodedUser, expiresText, signature] = parts;
  const expected = Buffer.from(hmac(devSettings().sessionSecret, `${encodedUser}.${expiresText}`));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  if (!/^\d{1,12}$/.test(expiresText) || Number(expiresText) <= Date.now() / 1000) return null;
  const userId = Buffer.from(encodedUser, "base64url").toString("utf8");
  return isValidDevUserId(userId) ? userId : null;
}

/** A user JWT as the host app's auth would issue it, valid for DEV_TOKEN_LIFETIME_SECONDS. */
export function mintDevUserJwt(userId: string, nowSeconds = Math.floor(Date.now() / 1000)): string {
  const { jwtSecret, audience, issuer } = devSettings();
  const header = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url");
  const claims: Record<string, unknown> = { sub: userId, aud: audience, iat: nowSeconds, exp: nowSeconds + DEV_TOKEN_LIFETIME_SECONDS };
  if (issuer) claims.iss = issuer;
  const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
  return `${header}.${body}.${hmac(jwtSecret, `${header}.${body}`)}`;
}
