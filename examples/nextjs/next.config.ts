import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  poweredByHeader: false,
  reactStrictMode: true,
  // The example lives inside the Python repository: pin the workspace root so Next.js does not look for
  // lock files above it.
  turbopack: { root: __dirname },
  outputFileTracingRoot: __dirname,
  // `next dev` would otherwise write AGENTS.md files into the example.
  agentRules: false,
  experimental: { agentUpgrade: false },
};

export default nextConfig;
