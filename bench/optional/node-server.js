// Optional comparison row of bench/run (OPTIONAL=1): Node's own http module
// answering GET / and POST /api/v1/echo like examples/bare.rs, one process
// per WEB_CONCURRENCY worker (cluster), on HOST:PORT.
"use strict";
const cluster = require("node:cluster");
const http = require("node:http");

const port = Number(process.env.PORT || 5000);
const host = process.env.HOST || "127.0.0.1";
const workers = Number(process.env.WEB_CONCURRENCY || 1);

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let up = 0;
  cluster.on("listening", () => {
    if (++up === workers) console.log(`listening on http://${host}:${port}`);
  });
  process.on("SIGTERM", () => {
    for (const id in cluster.workers) cluster.workers[id].kill("SIGTERM");
    process.exit(0);
  });
} else {
  const health = JSON.stringify({ status: "healthy", service: "portbound", version: process.env.BENCH_VERSION || "0.1.0" });
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(health);
    } else if (req.method === "POST" && req.url === "/api/v1/echo") {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        let message;
        try {
          message = JSON.parse(Buffer.concat(chunks).toString("utf8")).message;
        } catch {
          res.writeHead(400).end();
          return;
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ message, length: [...message].length, request: { method: req.method, path: req.url } }));
      });
    } else {
      res.writeHead(404).end();
    }
  });
  server.keepAliveTimeout = 95000;
  server.listen(port, host, () => {
    if (workers <= 1) console.log(`listening on http://${host}:${port}`);
  });
}
