import "server-only";

import type { NextRequest } from "next/server";

export const NO_STORE = { "Cache-Control": "no-store" } as const;

/** A form POST from this app's own pages: the browser's Origin names this host (CSRF defence in depth,
 *  besides SameSite=Lax cookies). A request without Origin is refused too. */
export function isSameOrigin(request: NextRequest): boolean {
  const origin = request.headers.get("origin");
  const host = request.headers.get("host");
  if (!origin || !host) return false;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}

/** 303 See Other to a path of this app (a relative Location: the browser resolves it against this host). */
export function seeOther(location: string): Response {
  return new Response(null, { status: 303, headers: { Location: location, ...NO_STORE } });
}

export function refused(status: number, message: string): Response {
  return new Response(message, { status, headers: { "Content-Type": "text/plain; charset=utf-8", ...NO_STORE } });
}
