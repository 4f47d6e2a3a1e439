// The web chat page in a real browser (playwright-core driving Debian's
// chromium, headless) against a real sinkserve-server: pick a policy and
// window, chat two turns in one session, watch tokens and the cache panel,
// see the text arrive in pieces before the turn ends, stop a turn, start a
// new conversation. Saves a screenshot where --screenshot names (CTest: in
// the build's tests/server folder).
//   node tests/http/web_page_test.mjs --server-binary B --shared-dir D [--screenshot F.png]
import { existsSync } from "node:fs";
import { args, check, importOrSkip, skip, startServer } from "./server.mjs";

const opts = args();
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
if (!existsSync(chromiumPath)) skip(`no browser at ${chromiumPath} (apt-get install chromium, or set CHROMIUM)`);
const { chromium } = await importOrSkip("playwright-core");
const server = await startServer(opts["server-binary"], opts["shared-dir"], ["--max-new-tokens", "100000"]);
const browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });

async function idle(page) {
  await page.waitForFunction(() => document.body.dataset.state === "idle", null, { timeout: 30000 });
}

async function number(page, selector) {
  return Number((await page.textContent(selector)).replace(/[^0-9]/g, ""));
}

try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`http://127.0.0.1:${server.httpPort}/`);
  // The page works behind an API key: it asks for one.
  await page.fill("#api-key", server.key);
  await page.waitForFunction(() => document.querySelector("#model").textContent.includes("stories260K"), null,
    { timeout: 10000 }).catch(() => {});
  await page.selectOption("#policy", "sink_window");
  await page.fill("#sinks", "4");
  await page.fill("#window", "60");
  // Long enough to span many frames even on a loaded machine (the page
  // adds streamed text once per frame).
  await page.fill("#max-tokens", "10000");
  await page.fill("#temperature", "0");

  // Record the answer's length at every change while the page streams.
  await page.evaluate(() => {
    window.seenWhileStreaming = [];
    new MutationObserver(() => {
      const answers = document.querySelectorAll("#transcript .msg.assistant");
      const last = answers[answers.length - 1];
      if (last && document.body.dataset.state === "streaming") window.seenWhileStreaming.push(last.textContent.length);
    }).observe(document.querySelector("#transcript"), { subtree: true, childList: true, characterData: true });
  });
  await page.fill("#prompt", "Once upon a time");
  await page.click("#send", { noWaitAfter: true });
  await idle(page);
  const lengths = [...new Set(await page.evaluate(() => window.seenWhileStreaming))].filter((n) => n > 0);
  check(lengths.length >= 2, `text arrived in pieces before the turn ended (lengths seen: ${lengths.join(",")})`);
  const id = (await page.textContent("#session-id")).trim();
  check(/^[0-9a-f]{32}$/.test(id), `session id shown: ${id}`);
  const first = await page.textContent("#transcript .msg.assistant");
  check(first.trim().length > 0, "the first answer streamed into the page");
  check((await page.textContent("#c-policy")).includes("sink_window"), "policy shown");
  check((await number(page, "#c-window")) === 60, "window shown");
  check((await number(page, "#c-turns")) === 1, "one turn");
  const seen1 = await number(page, "#c-seen");
  check(seen1 > 0, "tokens seen shown");

  // A second turn in the same session: only the new message goes out.
  await page.fill("#prompt", "The dog ran");
  await page.click("#send", { noWaitAfter: true });
  await idle(page);
  check((await page.$$("#transcript .msg.assistant")).length === 2, "two answers");
  check((await page.textContent("#session-id")).trim() === id, "same session");
  check((await number(page, "#c-turns")) === 2, "two turns");
  const seen2 = await number(page, "#c-seen");
  check(seen2 > seen1, `tokens seen grow (${seen1} -> ${seen2})`);
  check((await number(page, "#c-cache")) <= 64, "the cache holds at most sinks + window");
  // Tokens seen = in cache + evicted + the token sampled last (not fed yet).
  const cached = await number(page, "#c-cache");
  const evicted = await number(page, "#c-evicted");
  check(evicted > 0 && evicted === seen2 - cached - 1, `evictions shown (${seen2} seen, ${cached} cached, ${evicted} evicted)`);
  const screenshot = opts.screenshot ?? process.env.SCREENSHOT;
  if (screenshot) await page.screenshot({ path: screenshot });

  // New conversation: the session is deleted and the settings come back.
  await page.click("#new", { noWaitAfter: true });
  await page.waitForFunction(() => document.querySelector("#session-id").textContent.trim() === "none", null,
    { timeout: 10000 });
  const gone = await fetch(`http://127.0.0.1:${server.httpPort}/v1/sessions/${id}`, {
    headers: { authorization: `Bearer ${server.key}` },
  });
  check(gone.status === 404, `the old session is deleted (${gone.status})`);

  // Stop a long turn: the page returns to idle, the server cancels it.
  await page.fill("#max-tokens", "100000");
  await page.fill("#prompt", "Tell me a long story");
  await page.click("#send", { noWaitAfter: true });
  await page.waitForFunction(() => document.body.dataset.state === "streaming", null, { timeout: 10000 });
  await page.waitForTimeout(300);
  await page.click("#stop", { noWaitAfter: true });
  await idle(page);
  let running = 1;
  for (let i = 0; i < 100 && running !== 0; ++i) {
    await new Promise((r) => setTimeout(r, 50));
    const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`, {
      headers: { authorization: `Bearer ${server.key}` },
    })).text();
    running = Number(text.split("\n").find((l) => l.startsWith("sinkserve_turns_running ")).split(" ")[1]);
  }
  check(running === 0, "the stopped turn was cancelled on the server");
  check(errors.length === 0, `no page errors: ${errors.join("; ")}`);
  console.log("OK");
} finally {
  await browser.close();
  await server.stop();
}
