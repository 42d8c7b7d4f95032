/**
 * The OpenAPI 3.1 document and the /docs page, generated from the route table and the contract's
 * zod schemas (zod's own JSON Schema output), so the description is the validation. The docs page is
 * self-contained HTML: no script or style from any CDN.
 */
import { z } from "zod";
import { ERROR_STATUS } from "../core/contract/index.ts";
import { ROUTES, type RouteSpec } from "./routes.ts";

type Json = Record<string, unknown>;

function schemaOf(schema: z.ZodType): Json {
  const json = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as Json;
  delete json.$schema;
  return json;
}

function security(route: RouteSpec): Json[] {
  switch (route.auth.kind) {
    case "none":
    case "enrollment":
      return [];
    case "oidc":
      return [{ oidcBearer: [route.auth.scope] }];
    case "hostToken":
      return [{ hostToken: [] }];
    case "oidcOrHostToken":
      return [{ oidcBearer: [route.auth.scope] }, { hostToken: [] }];
  }
}

function operation(route: RouteSpec): Json {
  const params: Json[] = [];
  for (const m of route.path.matchAll(/:([a-zA-Z]+)/g)) {
    params.push({
      name: m[1],
      in: "path",
      required: true,
      schema: { type: "string", maxLength: 64 },
    });
  }
  if (route.query) {
    const q = schemaOf(route.query) as { properties?: Record<string, Json>; required?: string[] };
    for (const [name, schema] of Object.entries(q.properties ?? {})) {
      params.push({ name, in: "query", required: q.required?.includes(name) ?? false, schema });
    }
  }
  params.push({
    name: "traceparent",
    in: "header",
    required: false,
    schema: { type: "string" },
    description: "W3C trace context; its trace id becomes x-request-id",
  });
  if (route.method === "POST") {
    params.push({
      name: "Idempotency-Key",
      in: "header",
      required: false,
      schema: { type: "string", minLength: 8, maxLength: 128 },
      description: "Repeat a POST safely: the same key replays the first answer",
    });
  }
  const op: Json = {
    summary: route.summary,
    operationId: `${route.method.toLowerCase()}${route.path.replace(/[/:-](\w)/g, (_, c: string) => c.toUpperCase())}`,
    security: security(route),
    parameters: params,
    responses: {
      "2XX": { description: "Success" },
      "4XX": { $ref: "#/components/responses/Error" },
      "5XX": { $ref: "#/components/responses/Error" },
    },
  };
  if (route.body) {
    op.requestBody = {
      required: !route.bodyOptional,
      content: { "application/json": { schema: schemaOf(route.body) } },
    };
  }
  if (route.auth.kind === "oidc" && route.auth.mfa) {
    op.description = "The token's amr claim must name a second factor (mfa, otp, hwk, ...).";
  }
  return op;
}

export function openApiDocument(version: string): Json {
  const paths: Record<string, Json> = {
    "/v1/health": {
      get: {
        summary: "Liveness of the edge and of each signer region",
        operationId: "getV1Health",
        security: [],
        responses: {
          "200": { description: "ok or degraded" },
          "503": { description: "no signer region" },
        },
      },
    },
  };
  for (const route of ROUTES) {
    const path = route.path.replace(/:([a-zA-Z]+)/g, "{$1}");
    paths[path] = { ...paths[path], [route.method.toLowerCase()]: operation(route) };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "Keyhole",
      version,
      description:
        "A certificate authority for Nebula overlay networks. Every response carries x-request-id; every error body is {error: {code, message, traceId}}.",
    },
    paths,
    components: {
      securitySchemes: {
        oidcBearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" },
        hostToken: { type: "http", scheme: "bearer", description: "Host token from /v1/enroll" },
      },
      responses: {
        Error: {
          description: "An error with a stable code",
          content: {
            "application/json": {
              schema: {
                type: "object",
                required: ["error"],
                properties: {
                  error: {
                    type: "object",
                    required: ["code", "message", "traceId"],
                    properties: {
                      code: { type: "string", enum: Object.keys(ERROR_STATUS) },
                      message: { type: "string" },
                      traceId: { type: "string", pattern: "^[0-9a-f]{32}$" },
                      details: { type: "object" },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  };
}

/** A small page that lists the operations of /openapi.json and shows their schemas. */
export const DOCS_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyhole API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}details{border:1px solid #ddd;border-radius:6px;margin:.5rem 0;padding:.4rem .8rem}
summary{cursor:pointer}code.m{display:inline-block;width:3.5rem;font-weight:bold}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:13px}
</style></head>
<body><h1>Keyhole API</h1>
<p>Machine-readable description: <a href="/openapi.json">/openapi.json</a>. Errors are
<code>{"error": {"code", "message", "traceId"}}</code>; every response carries <code>x-request-id</code>.</p>
<div id="ops">Loading /openapi.json ...</div>
<script>
fetch("/openapi.json").then(function (r) { return r.json(); }).then(function (doc) {
  var out = document.getElementById("ops"); out.textContent = "";
  Object.keys(doc.paths).forEach(function (path) {
    var item = doc.paths[path];
    Object.keys(item).forEach(function (method) {
      var op = item[method], d = document.createElement("details"), s = document.createElement("summary");
      var m = document.createElement("code"); m.className = "m"; m.textContent = method.toUpperCase();
      s.appendChild(m); s.appendChild(document.createTextNode(" " + path + " - " + op.summary));
      d.appendChild(s);
      var pre = document.createElement("pre");
      pre.textContent = JSON.stringify({ security: op.security, parameters: op.parameters,
        requestBody: op.requestBody && op.requestBody.content["application/json"].schema }, null, 2);
      d.appendChild(pre); out.appendChild(d);
    });
  });
}).catch(function (e) { document.getElementById("ops").textContent = "Could not load /openapi.json: " + e; });
</script></body></html>
`;
