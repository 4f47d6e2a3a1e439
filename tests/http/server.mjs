// What the Node tests share: a sinkserve-server child process with
// stories260K on free ports (gRPC and HTTP), and the skip convention (exit
// 77 with a message when a piece is missing).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

export const SKIP = 77;

export function skip(why) {
  console.log(`SKIP: ${why}`);
  process.exit(SKIP);
}

export function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  return out;
}

export async function importOrSkip(name) {
  try {
    return await import(name);
  } catch (e) {
    skip(`node module '${name}' is missing (${e.code ?? e.message}); run: npm ci --prefix tests/http`);
  }
}

// Starts the server; resolves to { proc, httpPort, key, stop() }.
export async function startServer(binary, shared, extra = []) {
  const model = path.join(shared, "models/stories260K/stories260K.bin");
  if (!existsSync(model)) skip(`shared test data missing: ${model}`);
  const work = mkdtempSync(path.join(tmpdir(), "sinkserve-node-"));
  const key = "node-test-key-0123456789abcdef";
  const keys = path.join(work, "keys.txt");
  writeFileSync(keys, `${key}\n`);
  const proc = spawn(binary, [
    "--model", model, "--tokenizer", path.join(shared, "models/stories260K/tok512.bin"), "--backend", "cpu",
    "--threads", "1", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--api-key-file", keys, ...extra,
  ], { stdio: ["ignore", "ignore", "pipe"] });
  const line = await new Promise((resolve, reject) => {
    let buffer = "";
    const timer = setTimeout(() => reject(new Error(`no startup line: ${buffer}`)), 30000);
    proc.stderr.on("data", (chunk) => {
      buffer += chunk;
      const newline = buffer.indexOf("\n");
      if (newline >= 0) {
        clearTimeout(timer);
        resolve(buffer.slice(0, newline));
      }
    });
    proc.on("exit", (code) => reject(new Error(`server exited (${code}): ${buffer}`)));
  });
  const match = / http=\S*:(\d+) /.exec(line);
  if (!match) {
    proc.kill("SIGKILL");
    throw new Error(`no http port in: ${line}`);
  }
  const stop = () =>
    new Promise((resolve) => {
      proc.on("exit", resolve);
      proc.kill("SIGTERM");
    });
  return { proc, httpPort: Number(match[1]), key, stop };
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}
