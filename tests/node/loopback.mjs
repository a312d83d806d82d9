// Runs the reference server `@modelcontextprotocol/server-everything` bound to 127.0.0.1
// instead of every interface (it only takes PORT): `node loopback.mjs streamableHttp`.
// The server calls `app.listen(PORT, callback)`; a listen call given a port and no host
// gets the loopback host added.
import http from "node:http";

const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (...args) {
  const portOnly =
    (typeof args[0] === "number" || typeof args[0] === "string") &&
    typeof args[1] !== "string";
  if (portOnly) {
    args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};

await import("@modelcontextprotocol/server-everything/dist/index.js");
