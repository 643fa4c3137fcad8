import type { NextRequest } from "next/server";

import { DEV_SESSION_COOKIE } from "@/lib/dev-sign-in";
import { isSameOrigin, refused, seeOther } from "@/lib/http";
import { PENDING_CHECKOUT_COOKIE } from "@/lib/pending-checkout";

export const dynamic = "force-dynamic";

export async function POST(request: NextRequest): Promise<Response> {
  if (!isSameOrigin(request)) return refused(403, "cross-origin form posts are refused");
  const response = seeOther("/sign-in");
  for (const name of [DEV_SESSION_COOKIE, PENDING_CHECKOUT_COOKIE]) {
    response.headers.append("Set-Cookie", `${name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0`);
  }
  return response;
}
