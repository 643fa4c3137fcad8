import type { Metadata } from "next";
import type { ReactNode } from "react";

import { signedInUser } from "@/lib/auth";
import { devSignInEnabled } from "@/lib/dev-sign-in";

import "./globals.css";

export const metadata: Metadata = { title: "Credits", description: "The credits suite's example host app" };

export default async function RootLayout({ children }: { children: ReactNode }) {
  const user = await signedInUser().catch(() => null);
  return (
    <html lang="en">
      <body>
        <header>
          <strong>Resume Matcher · Credits</strong>
          <span>
            {devSignInEnabled() && <small className="status">development sign-in</small>}{" "}
            {user ? (
              <form action="/api/sign-out" method="post" style={{ display: "inline" }}>
                Signed in as <strong data-testid="user">{user.userId}</strong>{" "}
                <button className="link" type="submit">Sign out</button>
              </form>
            ) : (
              <a href="/sign-in">Sign in</a>
            )}
          </span>
        </header>
        <main>{children}</main>
      </body>
    </html>
  );
}
