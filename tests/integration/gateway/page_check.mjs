// Drives the gateway's web page in headless Chromium (playwright-core), for
// test_gateway_web_page.py. Checks what the page shows, chats through it, kills one
// server (SIGKILL to KILL_PID) and times how long the page takes to mark it unreachable.
// Inputs (environment): GATEWAY_HTTP, CHROMIUM, PROMPT, KILL_PID, KILL_ID, SHOTS (a
// directory for screenshots). Prints one JSON object.
import { chromium } from "playwright-core";

const env = process.env;
const browser = await chromium.launch({ executablePath: env.CHROMIUM, headless: true,
                                        args: ["--no-sandbox", "--disable-gpu"] });
const result = {};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`http://${env.GATEWAY_HTTP}/`);
  await page.waitForFunction(() => document.querySelectorAll("tr[data-server-id][data-reachable=true]").length === 3,
                             null, { timeout: 60000 });
  result.servers = await page.$$eval("tr[data-server-id]", (rows) => rows.map((row) => ({
    id: row.dataset.serverId, state: row.dataset.state, reachable: row.dataset.reachable === "true",
    text: row.innerText, blocks: [...row.querySelectorAll("td[data-block]")].map((td) => Number(td.dataset.block)) })));
  result.blockColumns = await page.$$eval("table.map tr:first-child th", (cells) => cells.length - 9);
  result.totals = await page.$eval("#totals", (box) => box.innerText);

  // chat: the answer must grow while it streams, then be whole
  await page.fill("#chat-input", env.PROMPT);
  await page.click("#chat-send");
  const partials = new Set();
  const began = Date.now();
  for (;;) {
    const state = await page.$eval(".msg.assistant", (node) => [node.textContent, node.dataset.done]);
    if (state[0]) partials.add(state[0]);
    if (state[1] === "true") break;
    if (Date.now() - began > 600000) throw new Error("no chat answer within 600 s");
    await page.waitForTimeout(20);
  }
  result.chat = await page.$eval(".msg.assistant", (node) => node.textContent);
  result.chatPartials = partials.size;
  await page.screenshot({ path: `${env.SHOTS}/gateway-page-chat.png`, fullPage: true });

  // kill one server: its row must turn unreachable within an update period
  const selector = `tr[data-server-id="${env.KILL_ID}"][data-reachable=false]`;
  process.kill(Number(env.KILL_PID), "SIGKILL");
  const killed = Date.now();
  await page.waitForSelector(selector, { timeout: 60000 });
  result.unreachableAfterMs = Date.now() - killed;
  result.killedRow = await page.$eval(selector, (row) => row.innerText);
  result.reachableRows = await page.$$eval("tr[data-server-id][data-reachable=true]", (rows) => rows.length);
  result.totalsAfter = await page.$eval("#totals", (box) => box.innerText);
  result.updatePeriodS = await page.evaluate(() => period);
  await page.screenshot({ path: `${env.SHOTS}/gateway-page-unreachable.png`, fullPage: true });
  result.pageErrors = errors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
