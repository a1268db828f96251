// Generates generated/schema.ts from the committed spec with openapi-typescript
// (its Node API, the documented place for a transform). The one setting:
// `format: binary` becomes `Blob` (a request or response body of raw bytes),
// as openapi-typescript's documentation shows; by default it would be
// `string`. Fails on any warning or error the generator reports about the
// spec: a defect of the spec, to fix in src/api/*.rs.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const here = path.dirname(fileURLToPath(import.meta.url));
const spec = process.env.AMO_SPEC ?? path.join(here, "../../openapi/openapi.json");
const out = path.join(here, "generated/schema.ts");

const problems = [];
const original = { warn: console.warn, error: console.error };
console.warn = (...args) => problems.push(["warning", args.join(" ")]);
console.error = (...args) => problems.push(["error", args.join(" ")]);

const BLOB = ts.factory.createTypeReferenceNode(ts.factory.createIdentifier("Blob"));
let ast;
try {
  ast = await openapiTS(new URL(`file://${path.resolve(spec)}`), {
    transform(schemaObject) {
      if (schemaObject.format === "binary") {
        return schemaObject.nullable ? ts.factory.createUnionTypeNode([BLOB, ts.factory.createLiteralTypeNode(ts.factory.createNull())]) : BLOB;
      }
      return undefined;
    },
  });
} finally {
  Object.assign(console, original);
}
for (const [kind, message] of problems) {
  console.error(`openapi-typescript ${kind}: ${message}`);
}
if (problems.length > 0) {
  console.error(`FAIL: openapi-typescript reported ${problems.length} problem(s) with ${spec}`);
  process.exit(1);
}
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, astToString(ast));
console.log(`generated ${path.relative(process.cwd(), out)} from ${spec}`);
