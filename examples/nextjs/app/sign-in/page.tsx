import { DEV_USERS, devSignInEnabled } from "@/lib/dev-sign-in";

export const dynamic = "force-dynamic";

// The sign-in page. Here only the development user picker exists; a real host app signs its users in
// with its own auth and this page is not needed.
export default async function SignIn({ searchParams }: { searchParams: Promise<Record<string, string | string[] | undefined>> }) {
  if (!devSignInEnabled()) {
    return (
      <section data-state="dev-sign-in-off">
        <h1>Sign in</h1>
        <p>The development sign-in is off. This app signs people in through the host app&apos;s own authentication.</p>
        <p>
          <small>Developers: start the app with <code>DEV_SIGN_IN=1</code> and the suite&apos;s JWT secret (see the README).</small>
        </p>
      </section>
    );
  }
  const { error } = await searchParams;
  return (
    <section className="dev" data-state="dev-sign-in">
      <h1>Development sign-in</h1>
      <p>
        Pick a user. The app mints that user&apos;s JWT with the suite&apos;s development secret, on the server, for each
        call to the gateway. <strong>Never enable this in production.</strong>
      </p>
      {error === "INVALID_USER_ID" && <p className="notice error">A user id is 1 to 64 printable characters without spaces.</p>}
      <form action="/api/dev/sign-in" method="post">
        {DEV_USERS.map((userId) => (
          <button key={userId} type="submit" name="user_id" value={userId} style={{ marginRight: "0.5rem" }}>
            {userId}
          </button>
        ))}
      </form>
      <form action="/api/dev/sign-in" method="post" style={{ marginTop: "1rem" }}>
        <label>
          Another user id <input name="user_id" required maxLength={64} pattern="[!-~]{1,64}" data-testid="user-id" />
        </label>{" "}
        <button type="submit">Sign in</button>
      </form>
    </section>
  );
}
