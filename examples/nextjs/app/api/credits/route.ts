import type { NextRequest } from "next/server";

import { signedInUser } from "@/lib/auth";
import { fetchMyCredits } from "@/lib/gateway";
import { NO_STORE } from "@/lib/http";

export const dynamic = "force-dynamic"; // Per-user data: never prerendered, never cached.

const CURSOR_PATTERN = /^[A-Za-z0-9_-]{1,128}={0,2}$/;

// GET /api/credits?cursor=: the signed-in user's credits as JSON, for client components. The page
// itself renders on the server without this hop; the JWT stays on this server either way.
export async function GET(request: NextRequest): Promise<Response> {
  const user = await signedInUser();
  if (!user) {
    return Response.json({ error: { code: "UNAUTHENTICATED", message: "sign in to see your credits" } }, { status: 401, headers: NO_STORE });
  }
  const cursor = request.nextUrl.searchParams.get("cursor");
  if (cursor !== null && !CURSOR_PATTERN.test(cursor)) {
    return Response.json({ error: { code: "INVALID_ARGUMENT", message: "cursor is not a next_cursor" } }, { status: 400, headers: NO_STORE });
  }
  const result = await fetchMyCredits(user.jwt, cursor);
  if (result.ok) return Response.json(result.value, { headers: NO_STORE });
  const { status, code, message, retryAfterSeconds } = result.failure;
  const headers: Record<string, string> = { ...NO_STORE };
  if (retryAfterSeconds !== null) headers["Retry-After"] = String(retryAfterSeconds);
  return Response.json({ error: { code, message } }, { status, headers });
}
