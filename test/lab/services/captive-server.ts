/**
 * The lab's captive portal, run in the router namespace while `npm run lab -- portal on`: a DNS responder that
 * answers every A query with the portal's address, a sign-in page (GET: a form; POST: "signed in", which adds the
 * client to the router's signed_in set through `nft`), and the connectivity-check host, which answers 204 to
 * whoever reaches it (only signed-in clients do: the router sends the others' port 80 to the portal).
 * Run as `node --import tsx captive-server.ts --portal <ip> --check <ip> --table <nft table>`.
 */
import { execFile } from "node:child_process";
import { createSocket } from "node:dgram";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { isIPv4 } from "node:net";
import { parseArgs } from "node:util";

/** `nft add element` takes milliseconds; a sign-in that could not be recorded in this long fails visibly. */
const NFT_TIMEOUT_MS = 5000;
/** A sign-in form is tiny; a bigger body is refused. */
const MAX_FORM_BYTES = 4096;
/** The portal's DNS answers live briefly, as real portals' do, so a client does not cache them past the sign-in. */
const DNS_TTL_S = 5;

const { values } = parseArgs({
  options: {
    portal: { type: "string" },
    check: { type: "string" },
    table: { type: "string" },
  },
});
const portal = values.portal ?? "";
const check = values.check ?? "";
const table = values.table ?? "";
if (!isIPv4(portal) || !isIPv4(check) || !/^[a-z_]{1,32}$/.test(table)) {
  process.stderr.write("captive-server: --portal <ipv4> --check <ipv4> --table <name> are required\n");
  process.exit(2);
}

function logLine(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ service: "captive-server", at: Date.now(), ...fields })}\n`);
}

const SIGN_IN_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Lab Hotel Wi-Fi</title></head>
<body><h1>Welcome to Lab Hotel Wi-Fi</h1>
<p>Accept the terms to use the Internet.</p>
<form method="post" action="/signin"><label><input type="checkbox" name="accept" value="yes"> I accept</label>
<button type="submit">Sign in</button></form></body></html>
`;

function signIn(address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      "nft",
      ["add", "element", "inet", table, "signed_in", `{ ${address} }`],
      { timeout: NFT_TIMEOUT_MS },
      (err, _stdout, stderr) => {
        if (err === null) resolve();
        else reject(new Error(`nft add element failed: ${stderr.trim() || err.message}`));
      },
    );
  });
}

function peer(req: IncomingMessage): string {
  return (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
}

function portalHandler(req: IncomingMessage, res: ServerResponse): void {
  const url = req.url ?? "/";
  const from = peer(req);
  logLine({ event: "http", server: "portal", method: req.method, host: req.headers.host, url, from });
  if (req.method === "POST" && url === "/signin") {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString("utf8");
      if (body.length > MAX_FORM_BYTES) req.destroy();
    });
    req.on("end", () => {
      if (!new URLSearchParams(body).has("accept")) {
        res.writeHead(400, { "content-type": "text/plain" }).end("Accept the terms first.\n");
        return;
      }
      signIn(from).then(
        () => {
          logLine({ event: "signed-in", address: from });
          res.writeHead(200, { "content-type": "text/html" }).end("<p>You are signed in. Enjoy your stay.</p>\n");
        },
        (err: unknown) => {
          logLine({ event: "sign-in-failed", address: from, error: String(err) });
          res.writeHead(500, { "content-type": "text/plain" }).end("Sign-in failed.\n");
        },
      );
    });
    return;
  }
  if (req.method === "GET" && url.startsWith("/signin")) {
    res.writeHead(200, { "content-type": "text/html" }).end(SIGN_IN_PAGE);
    return;
  }
  // Anything else (the check URL the router sent here, any web page): to the sign-in page, as hotels do.
  res.writeHead(302, { location: `http://${portal}/signin`, "content-type": "text/plain" }).end("Sign in first.\n");
}

function checkHandler(req: IncomingMessage, res: ServerResponse): void {
  logLine({ event: "http", server: "check", method: req.method, url: req.url, from: peer(req) });
  if (req.url === "/generate_204") res.writeHead(204).end();
  else res.writeHead(404).end();
}

/** One DNS answer: the query's id and question, and an A record with the portal's address for A queries. */
export function dnsAnswer(query: Buffer, address: string): Buffer | null {
  if (query.length < 12) return null;
  const qdcount = query.readUInt16BE(4);
  if (qdcount !== 1) return null;
  let off = 12;
  for (let guard = 0; guard < 128; guard++) {
    const len = query[off];
    if (len === undefined || len > 63) return null;
    off += 1 + len;
    if (len === 0) break;
  }
  if (off + 4 > query.length) return null;
  const qtype = query.readUInt16BE(off);
  const question = query.subarray(12, off + 4);
  const isA = qtype === 1;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0);
  header.writeUInt16BE(0x8180 | (query.readUInt16BE(2) & 0x0100), 2); // response, recursion available, RD copied
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(isA ? 1 : 0, 6);
  if (!isA) return Buffer.concat([header, question]);
  const rr = Buffer.alloc(16);
  rr.writeUInt16BE(0xc00c, 0); // name: pointer to the question
  rr.writeUInt16BE(1, 2);
  rr.writeUInt16BE(1, 4);
  rr.writeUInt32BE(DNS_TTL_S, 6);
  rr.writeUInt16BE(4, 10);
  address.split(".").forEach((o, i) => rr.writeUInt8(Number(o), 12 + i));
  return Buffer.concat([header, question, rr]);
}

const dns = createSocket("udp4");
dns.on("message", (msg, rinfo) => {
  const answer = dnsAnswer(msg, portal);
  logLine({ event: "dns", from: rinfo.address, answered: answer !== null });
  if (answer !== null) dns.send(answer, rinfo.port, rinfo.address);
});
const portalServer = createServer(portalHandler);
const checkServer = createServer(checkHandler);

let listening = 0;
const ready = (): void => {
  listening += 1;
  if (listening === 3) logLine({ event: "captive-server ready", portal, check });
};
dns.bind(53, portal, ready);
portalServer.listen(80, portal, ready);
checkServer.listen(80, check, ready);

const stop = (): void => {
  dns.close();
  portalServer.close();
  checkServer.close();
  portalServer.closeAllConnections();
  checkServer.closeAllConnections();
  setTimeout(() => process.exit(0), 500).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
