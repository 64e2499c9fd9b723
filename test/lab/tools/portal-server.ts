/**
 * The lab's gateway portal: an https server answering GET with one JSON document, run inside a lab namespace by
 * test/lab/portal.ts as `node --import tsx portal-server.ts <cert> <key> <document> <address> <port>`. Prints
 * "listening" once it accepts connections; stops on SIGTERM.
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:https";

const [certFile, keyFile, docFile, address, port] = process.argv.slice(2);
if (certFile === undefined || keyFile === undefined || docFile === undefined || address === undefined)
  throw new Error("usage: portal-server <cert> <key> <document> <address> <port>");
const server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
  // Read on every request, so a test can change the answer without restarting the server.
  const body = readFileSync(docFile);
  console.log(`${new Date().toISOString()} ${req.method ?? "?"} ${req.url ?? "?"}`);
  res.setHeader("content-type", "application/json");
  res.end(body);
});
server.listen(Number(port ?? 443), address, () => {
  console.log("listening");
});
process.on("SIGTERM", () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
