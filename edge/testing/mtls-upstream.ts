/**
 * Test instrument: a real HTTPS server that, like the signer, accepts only clients with a
 * certificate from the relay CA, and records every request that crossed the wire (method, path,
 * headers, body). Edge tests use it to prove what the signer would receive (and that junk never
 * arrives) and to take a region down or make it answer 5xx. It is not a signer: it makes no
 * certificates; tests that need real issuance start signer/main.ts.
 */
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { RelayPki } from "../../cli/dev/pki.ts";

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  /** Whether the TLS layer verified the client's certificate (always true: others are refused). */
  clientAuthorized: boolean;
}

export interface UpstreamAnswer {
  status: number;
  body: unknown;
}

export interface MtlsUpstream {
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** How the next requests are answered (default 200 with what was received). */
  answer: (req: RecordedRequest) => UpstreamAnswer | Promise<UpstreamAnswer>;
  /** Stops listening (connections are refused), keeping the port for `start()`. */
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startMtlsUpstream(pki: RelayPki, port = 0): Promise<MtlsUpstream> {
  const [key, cert, ca] = await Promise.all([
    readFile(pki.serverKey, "utf8"),
    readFile(pki.serverCert, "utf8"),
    readFile(pki.caCert, "utf8"),
  ]);
  let server: Server | undefined;
  const upstream: MtlsUpstream = {
    url: "",
    port,
    requests: [],
    answer: (req) => ({ status: 200, body: { received: { path: req.path, body: req.body } } }),
    async stop() {
      const s = server;
      server = undefined;
      if (!s) return;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    },
    async start() {
      const s = createServer(
        { key, cert, ca, requestCert: true, rejectUnauthorized: true },
        (req, res) => {
          const chunks: Buffer[] = [];
          req.on("data", (c: Buffer) => chunks.push(c));
          req.on("end", async () => {
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(req.headers)) {
              if (typeof v === "string") headers[k] = v;
            }
            const recorded: RecordedRequest = {
              method: req.method ?? "",
              path: req.url ?? "",
              headers,
              body: Buffer.concat(chunks).toString("utf8"),
              clientAuthorized: (req.socket as { authorized?: boolean }).authorized === true,
            };
            upstream.requests.push(recorded);
            const { status, body } = await upstream.answer(recorded);
            res.writeHead(status, { "content-type": "application/json" });
            res.end(JSON.stringify(body));
          });
        },
      );
      await new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        s.listen(upstream.port, "127.0.0.1", () => resolve());
      });
      server = s;
      upstream.port = (s.address() as AddressInfo).port;
      upstream.url = `https://127.0.0.1:${upstream.port}`;
    },
    close() {
      return upstream.stop();
    },
  };
  await upstream.start();
  return upstream;
}
