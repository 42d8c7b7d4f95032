import { createServer } from "node:net";
import { describe, expect, it, vi } from "vitest";
import { ephemeralRangeStart, freePort } from "./moto.ts";

describe("freePort", () => {
  it("picks loopback ports below the ephemeral range, where outgoing connections never land", async () => {
    const top = ephemeralRangeStart();
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(10_000);
      expect(port).toBeLessThan(top);
    }
  });

  it("gives a port a server can then listen on", async () => {
    const port = await freePort();
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
    await new Promise((r) => server.close(r));
  });

  it("skips a port that is taken and tries another", async () => {
    const top = ephemeralRangeStart();
    const taken = await freePort();
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(taken, "127.0.0.1", resolve));
    // The first draw lands on the taken port; the next ones are random again.
    const real = Math.random;
    const draws = vi.spyOn(Math, "random");
    draws.mockImplementationOnce(() => (taken - 10_000 + 0.5) / (top - 10_000));
    draws.mockImplementation(real);
    try {
      const port = await freePort();
      expect(port).not.toBe(taken);
      expect(draws.mock.calls.length).toBeGreaterThanOrEqual(2);
    } finally {
      draws.mockRestore();
      await new Promise((r) => server.close(r));
    }
  });
});
