import "server-only";

// The app's settings, read from the environment and checked once (instrumentation.ts calls
// `loadConfig` at start-up; a bad value stops the server with one line naming the variable).
//
//   CREDITS_GATEWAY_URL   the webhook gateway, reached from this server only (required)
//   CREDIT_PACKAGES       the same JSON catalog the gateway reads (default: the seed's three packs);
//                         shown on the Buy buttons only: the gateway prices every purchase itself
//   DEV_SIGN_IN           "1" turns the development sign-in on (see lib/dev-sign-in.ts)
//   DEV_JWT_SECRET        the suite's JWT_SECRET, to mint user tokens (dev sign-in only)
//   DEV_JWT_AUDIENCE      the suite's JWT_AUDIENCE ("credits"); DEV_JWT_ISSUER its JWT_ISSUER (none)
//   DEV_SESSION_SECRET    signs the dev sign-in cookie (default: derived from DEV_JWT_SECRET)

export class ConfigError extends Error {}

export type Package = { packageId: string; credits: number; amountMinor: number; currency: string };

export type Config = {
  gatewayUrl: URL;
  packages: Package[];
};

export const DEFAULT_PACKAGES: Package[] = [
  { packageId: "small", credits: 100, amountMinor: 500, currency: "eur" },
  { packageId: "medium", credits: 550, amountMinor: 2500, currency: "eur" },
  { packageId: "large", credits: 1200, amountMinor: 5000, currency: "eur" },
];
const PACKAGES_MAX = 50;

let loaded: Config | undefined;

export function loadConfig(): Config {
  loaded ??= { gatewayUrl: gatewayUrl(), packages: packages() };
  return loaded;
}

function gatewayUrl(): URL {
  const value = process.env.CREDITS_GATEWAY_URL;
  if (!value) throw new ConfigError("CREDITS_GATEWAY_URL is not set (the gateway's base URL, e.g. http://127.0.0.1:8080)");
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`CREDITS_GATEWAY_URL is not a URL: expected http(s)://host:port`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError("CREDITS_GATEWAY_URL must be an http:// or https:// URL");
  }
  return url;
}

function packages(): Package[] {
  const value = process.env.CREDIT_PACKAGES;
  if (!value) return DEFAULT_PACKAGES;
  const expected = 'CREDIT_PACKAGES must be a JSON object {"<id>": {"credits": 100, "amount_minor": 500, "currency": "eur"}}';
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new ConfigError(expected);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new ConfigError(expected);
  const entries = Object.entries(parsed as Record<string, unknown>);
  if (entries.length === 0 || entries.length > PACKAGES_MAX) throw new ConfigError(expected);
  return entries.map(([packageId, item]) => {
    const pack = item as Record<string, unknown>;
    if (
      typeof pack !== "object" || pack === null ||
      !Number.isSafeInteger(pack.credits) || (pack.credits as number) <= 0 ||
      !Number.isSafeInteger(pack.amount_minor) || (pack.amount_minor as number) <= 0 ||
      typeof pack.currency !== "string" || !/^[a-zA-Z]{3}$/.test(pack.currency)
    ) {
      throw new ConfigError(`${expected}; package ${JSON.stringify(packageId).slice(0, 40)} is not`);
    }
    return {
      packageId,
      credits: pack.credits as number,
      amountMinor: pack.amount_minor as number,
      currency: pack.currency.toLowerCase(),
    };
  });
}
