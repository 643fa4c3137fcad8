import { ConfigError, loadConfig } from "@/lib/config";
import { devSettings, devSignInEnabled } from "@/lib/dev-sign-in";

// Check the configuration once at start-up (a bad value stops the server with one line naming the
// variable), and say loudly when the development sign-in is on in a production build.
export function checkStartup(): void {
  try {
    loadConfig();
    if (devSignInEnabled()) devSettings();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`credits example: ${error.message}`);
    process.exit(1);
  }
  if (devSignInEnabled() && process.env.NODE_ENV === "production") {
    console.warn("credits example: DEV_SIGN_IN=1 in a production build: anyone can sign in as anyone. Development only.");
  }
}
