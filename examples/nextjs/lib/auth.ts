import "server-only";

import { cookies } from "next/headers";

import { DEV_SESSION_COOKIE, devSessionUserId, devSignInEnabled, mintDevUserJwt } from "@/lib/dev-sign-in";

export type SignedInUser = { userId: string; jwt: string };

/**
 * The signed-in user and the JWT to call the gateway with, or null when nobody is signed in.
 *
 * This is the one place where the host app's own auth plugs in: return its user id and the JWT it
 * issues for that user (sub = user id, the audience/issuer the gateway checks). The JWT never goes
 * to the browser. In this example only the development sign-in exists, fenced by DEV_SIGN_IN=1.
 */
export async function signedInUser(): Promise<SignedInUser | null> {
  if (!devSignInEnabled()) return null; // Production: your auth here.
  const userId = devSessionUserId((await cookies()).get(DEV_SESSION_COOKIE)?.value);
  return userId === null ? null : { userId, jwt: mintDevUserJwt(userId) };
}
