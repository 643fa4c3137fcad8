import type { NextRequest } from "next/server";

import { DEV_SESSION_COOKIE, DEV_SESSION_LIFETIME_SECONDS, devSessionCookieValue, devSignInEnabled, isValidDevUserId } from "@/lib/dev-sign-in";
import { isSameOrigin, refused, seeOther } from "@/lib/http";

export const dynamic = "force-dynamic";

// POST /api/dev/sign-in (form: user_id). DEVELOPMENT ONLY: 404 unless DEV_SIGN_IN=1.
export async function POST(request: NextRequest): Promise<Response> {
  if (!devSignInEnabled()) return refused(404, "not found");
  if (!isSameOrigin(request)) return refused(403, "cross-origin form posts are refused");
  const userId = (await request.formData()).get("user_id");
  if (typeof userId !== "string" || !isValidDevUserId(userId.trim())) {
    return seeOther("/sign-in?error=INVALID_USER_ID");
  }
  const value = devSessionCookieValue(userId.trim());
  const secure = request.nextUrl.protocol === "https:" ? "; Secure" : "";
  const response = seeOther("/credits");
  response.headers.append(
    "Set-Cookie",
    `${DEV_SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${DEV_SESSION_LIFETIME_SECONDS}${secure}`,
  );
  return response;
}

export function GET(): Response {
  return refused(devSignInEnabled() ? 405 : 404, devSignInEnabled() ? "use the form on /sign-in" : "not found");
}
