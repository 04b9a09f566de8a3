// The notebook page in a real browser: Debian's Chromium driven by
// playwright-core. Starts the wsloop binary ($WSLOOP_BIN, default
// target/release/wsloop) on a free loopback port with a fresh notebook
// directory, and checks what a person would do: create a note, run SQL and
// Markdown, watch a second tab update live, survive a server restart.
// Prints "N passed, M failed" and exits non-zero on any failure.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binary = process.env.WSLOOP_BIN || join(root, "target/release/wsloop");
const screenshotDir = join(root, "target");
const notebookDir = mkdtempSync(join(tmpdir(), "wsloop-browser-"));

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
    server.on("error", fail);
  });
}

function startServer(port) {
  const child = spawn(binary, ["--listen", `127.0.0.1:${port}`, "--notebook-dir", notebookDir, "--log-level", "info"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((ok, fail) => {
    let log = "";
    const timer = setTimeout(() => fail(new Error("wsloop did not start:\n" + log)), 10000);
    child.stderr.on("data", (chunk) => {
      log += chunk;
      if (log.includes("listening on ws://")) {
        clearTimeout(timer);
        ok(child);
      }
    });
    child.on("exit", (code) => fail(new Error(`wsloop exited with ${code}:\n${log}`)));
  });
}

function stopServer(child) {
  return new Promise((ok) => {
    if (child.exitCode !== null) return ok();
    child.on("exit", () => ok());
    child.kill("SIGTERM");
  });
}

const tests = [];
const test = (name, body) => tests.push({ name, body });

async function createNote(page, name) {
  await page.getByTestId("new-note-name").fill(name);
  await page.getByTestId("new-note").click();
  await page.getByTestId("note-title").filter({ hasText: "/" + name }).waitFor();
}

// Creates note `name` in one tab and opens it in a second.
async function twoTabsOnNewNote(browser, url, name) {
  const first = await browser.newPage();
  await first.goto(url);
  await createNote(first, name);
  const second = await browser.newPage();
  await second.goto(url);
  await second.getByTestId("note-link").filter({ hasText: name }).click();
  await second.getByTestId("note-title").filter({ hasText: "/" + name }).waitFor();
  return [first, second];
}

// Counts the server's PARAGRAPH messages to `page` that carry `marker`.
function countParagraphAnswers(page, marker) {
  const answers = { count: 0 };
  page.on("websocket", (ws) => ws.on("framereceived", (frame) => {
    const text = String(frame.payload);
    if (text.includes('"op":"PARAGRAPH"') && text.includes(marker)) answers.count += 1;
  }));
  return answers;
}

// Polls `check` every 20 ms; fails with `what` after `limit` ms.
async function until(page, check, what, limit = 5000) {
  for (let waited = 0; !(await check()); waited += 20) {
    if (waited > limit) throw new Error(what);
    await page.waitForTimeout(20);
  }
}

async function untilAnswered(page, answers, what) {
  await until(page, () => answers.count > 0, `${what} was not answered`, 10000);
}

async function runInParagraph(page, index, text) {
  const paragraph = page.getByTestId("paragraph").nth(index);
  await paragraph.getByTestId("paragraph-editor").fill(text);
  await paragraph.getByTestId("run-paragraph").click();
  await page.getByTestId("paragraph").nth(index).getByTestId("paragraph-status").filter({ hasText: /FINISHED|ERROR/ }).waitFor();
  return page.getByTestId("paragraph").nth(index);
}

test("create a note, run %sql and %md, see a table and bold text", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "browser test");
  const sql = await runInParagraph(page, 0, "%sql select 1+1 as two");
  await sql.getByTestId("result-table").locator("td", { hasText: /^2$/ }).waitFor();
  const header = await sql.getByTestId("result-table").locator("th").first().textContent();
  if (header !== "two") throw new Error(`table header is ${header}`);
  // The numeric column can be shown as a bar chart.
  await sql.getByTestId("view-bar").click();
  await sql.getByTestId("result-chart").waitFor({ state: "visible" });

  await page.getByTestId("add-paragraph").click();
  await page.getByTestId("paragraph").nth(1).waitFor();
  const md = await runInParagraph(page, 1, "%md **hi** <script>window.pwned = 1</script>");
  await md.locator(".results strong", { hasText: "hi" }).waitFor();
  if (await page.evaluate(() => window.pwned)) throw new Error("script in Markdown ran");
  if (await md.locator(".results script").count()) throw new Error("script element rendered");
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: join(screenshotDir, "notebook-page.png"), fullPage: true });
  await page.close();
});

test("a click on Run counts when the server's answer to the edit lands mid-click", async ({ browser, url }) => {
  const page = await browser.newPage();
  const answers = countParagraphAnswers(page, "*held*");
  await page.goto(url);
  await createNote(page, "held click");
  const paragraph = page.getByTestId("paragraph").first();
  await paragraph.getByTestId("paragraph-editor").fill("%md *held*");
  // Press Run (the editor blurs and commits the text), hold the button until
  // the server has answered the commit, then release: a person's click.
  await paragraph.getByTestId("run-paragraph").hover();
  await page.mouse.down();
  await untilAnswered(page, answers, "the commit");
  await page.mouse.up();
  await paragraph.getByTestId("paragraph-status").filter({ hasText: "FINISHED" }).waitFor({ timeout: 10000 });
  await paragraph.locator(".results em", { hasText: "held" }).waitFor();
  await page.close();
});

test("a note created before the connection is up is created once it opens", async ({ browser, url }) => {
  const page = await browser.newPage();
  // Hold the page's ticket request back, so its WebSocket opens a second
  // after the page has loaded and the click below comes first.
  await page.route("**/api/security/ticket", async (route) => {
    await new Promise((done) => setTimeout(done, 1000));
    await route.continue();
  });
  await page.goto(url);
  await createNote(page, "early bird");
  if (await page.locator("#toast").isVisible()) throw new Error("a toast was shown on the first connect");
  await page.close();
});

test("two tabs on one note both see a run live", async ({ browser, url }) => {
  const [first, second] = await twoTabsOnNewNote(browser, url, "shared tabs");
  await runInParagraph(first, 0, "%sql select 21*2 as answer");
  await second.getByTestId("paragraph").first().getByTestId("result-table").locator("td", { hasText: /^42$/ }).waitFor();
  const status = await second.getByTestId("paragraph-status").first().textContent();
  if (status !== "FINISHED") throw new Error(`second tab shows ${status}`);
  await first.close();
  await second.close();
});

test("paragraphs added and removed in another tab leave this tab's typing alone", async ({ browser, url }) => {
  const [first, second] = await twoTabsOnNewNote(browser, url, "two writers");
  // Typing in the first tab, not committed yet (the editor keeps focus).
  const editor = first.getByTestId("paragraph").first().getByTestId("paragraph-editor");
  await editor.fill("%md draft in progress");
  await second.getByTestId("add-paragraph").click();
  await first.getByTestId("paragraph").nth(1).waitFor();
  await second.getByTestId("paragraph").nth(1).getByTitle("Remove paragraph").click();
  await first.getByTestId("paragraph").nth(1).waitFor({ state: "detached" });
  const typed = await editor.inputValue();
  if (typed !== "%md draft in progress") throw new Error(`the draft became "${typed}"`);
  if (!(await editor.evaluate((node) => node === document.activeElement))) throw new Error("the editor lost focus");
  await first.close();
  await second.close();
});

test("an editor left without a change shows what another tab committed meanwhile", async ({ browser, url }) => {
  const [first, second] = await twoTabsOnNewNote(browser, url, "focus only");
  const mine = first.getByTestId("paragraph").first().getByTestId("paragraph-editor");
  const theirs = second.getByTestId("paragraph").first().getByTestId("paragraph-editor");
  // A character typed and taken back is no change.
  await mine.focus();
  await mine.press("x");
  await mine.press("Backspace");
  await theirs.fill("%md from the other tab");
  await theirs.blur();
  // The first tab has the commit (and holds it back while focused)...
  await until(first, async () => (await first.evaluate(() => note.paragraphs[0].text)) === "%md from the other tab",
    "the first tab never heard of the commit");
  // ...and shows it once the editor is left without typing.
  await mine.blur();
  await until(first, async () => (await mine.inputValue()) === "%md from the other tab", "the editor kept the old text");
  // Later edits keep coming through.
  await theirs.fill("%md and again");
  await theirs.blur();
  await until(first, async () => (await mine.inputValue()) === "%md and again", "a later edit did not come through");
  await first.close();
  await second.close();
});

test("a dropped connection shows a banner, then reconnects and reopens the note", async ({ browser, url, restart }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "survivor");
  await restart(async () => {
    await page.getByTestId("banner").filter({ hasText: "Connection lost" }).waitFor({ state: "visible" });
  });
  await page.getByTestId("banner").waitFor({ state: "hidden", timeout: 20000 });
  await page.getByTestId("note-title").filter({ hasText: "/survivor" }).waitFor();
  const paragraph = await runInParagraph(page, 0, "%md back *again*");
  await paragraph.locator(".results em", { hasText: "again" }).waitFor();
  await page.close();
});

test("text typed while the connection is down survives the reconnect and reaches the server", async ({ browser, url, restart }) => {
  const page = await browser.newPage();
  const answers = countParagraphAnswers(page, "written offline");
  await page.goto(url);
  await createNote(page, "offline drafts");
  await page.getByTestId("add-paragraph").click();
  await page.getByTestId("paragraph").nth(1).waitFor();
  const committed = page.getByTestId("paragraph").nth(0).getByTestId("paragraph-editor");
  const typing = page.getByTestId("paragraph").nth(1).getByTestId("paragraph-editor");
  await restart(async () => {
    await page.getByTestId("banner").filter({ hasText: "Connection lost" }).waitFor({ state: "visible" });
    // The first editor is left (its commit waits for the connection); the
    // second keeps the focus and its text is not committed yet.
    await committed.fill("%md *written offline*");
    await typing.fill("%md still typing");
  });
  await page.getByTestId("banner").waitFor({ state: "hidden", timeout: 20000 });
  // The note was reopened (NOTE) before the commit's answer came back.
  await untilAnswered(page, answers, "the offline commit");
  await page.waitForTimeout(300);
  const draft = await typing.inputValue();
  if (draft !== "%md still typing") throw new Error(`the draft became "${draft}"`);
  if (!(await typing.evaluate((node) => node === document.activeElement))) throw new Error("the editor lost focus");
  if ((await committed.inputValue()) !== "%md *written offline*") throw new Error("the committed text was replaced");
  // Leaving the editor commits the draft; a second tab sees both texts.
  await typing.blur();
  const other = await browser.newPage();
  await other.goto(url);
  await other.getByTestId("note-link").filter({ hasText: "offline drafts" }).click();
  const editors = other.getByTestId("paragraph-editor");
  for (const [index, text] of [[0, "%md *written offline*"], [1, "%md still typing"]]) {
    await until(other, async () => (await editors.nth(index).inputValue()) === text,
      `the server does not have "${text}" in paragraph ${index}`, 10000);
  }
  await other.close();
  await page.close();
});

const port = await freePort();
let server = await startServer(port);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = {
  browser,
  url: `http://127.0.0.1:${port}/`,
  restart: async (whileDown) => {
    await stopServer(server);
    await whileDown();
    server = await startServer(port);
  },
};
let passed = 0, failed = 0;
for (const { name, body } of tests) {
  try {
    await body(context);
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAILED - ${name}\n${error.stack || error}`);
  }
}
await browser.close();
await stopServer(server);
rmSync(notebookDir, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
