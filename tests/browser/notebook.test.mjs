// The notebook page in a real browser: Debian's Chromium driven by
// playwright-core. Starts the wsloop binary ($WSLOOP_BIN, default
// target/release/wsloop) on a free loopback port with a fresh notebook
// directory, and checks what a person would do: create a note, run SQL and
// Markdown, watch a second tab update live, survive a server restart.
// Prints "N passed, M failed" and exits non-zero on any failure.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binary = process.env.WSLOOP_BIN || join(root, "target/release/wsloop");
// WSLOOP_SCREENSHOTS=docs refreshes the screenshots the docs show.
const screenshotDir = process.env.WSLOOP_SCREENSHOTS ? resolve(root, process.env.WSLOOP_SCREENSHOTS) : join(root, "target");
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

function startServer(port, dir = notebookDir, extra = []) {
  const child = spawn(binary, ["--listen", `127.0.0.1:${port}`, "--notebook-dir", dir, "--log-level", "info", ...extra], {
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
  // On a narrow screen the note list (with the form) opens from ☰.
  if (!(await page.getByTestId("new-note-name").isVisible())) await page.getByTestId("notes-toggle").click();
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


// ---- issue 25: the page a Zeppelin or Jupyter user can live in ----------

async function commitText(page, index, text) {
  const editor = page.getByTestId("paragraph").nth(index).getByTestId("paragraph-editor");
  await editor.fill(text);
  await editor.press("Control+s");
}

async function texts(page) {
  return page.getByTestId("paragraph-editor").evaluateAll((editors) => editors.map((e) => e.value));
}

async function expectTexts(page, wanted, what) {
  await until(page, async () => JSON.stringify(await texts(page)) === JSON.stringify(wanted),
    `${what}: paragraphs are ${JSON.stringify(await texts(page))}, not ${JSON.stringify(wanted)}`);
}

test("at 390 px the note list folds away and a paragraph's Run button is visible and clickable", async ({ browser, url }) => {
  const page = await browser.newPage({ viewport: { width: 390, height: 800 } });
  await page.goto(url);
  await createNote(page, "phone");
  // The list closed again; the note has the whole width.
  if (await page.getByTestId("notes").isVisible()) throw new Error("the note list still covers the note");
  const title = await page.getByTestId("note-title").boundingBox();
  if (title.width < 300) throw new Error(`the title is squeezed to ${title.width} px`);
  const run = page.getByTestId("paragraph").first().getByTestId("run-paragraph");
  const box = await run.boundingBox();
  if (!box || box.x < 0 || box.x + box.width > 390) throw new Error(`Run is at ${JSON.stringify(box)}, outside 390 px`);
  const remove = await page.getByTestId("paragraph").first().getByTitle("Remove paragraph").boundingBox();
  if (remove.x + remove.width > 390) throw new Error("✕ is cut off");
  if (await page.evaluate(() => document.documentElement.scrollWidth > innerWidth || document.getElementById("main").scrollWidth > document.getElementById("main").clientWidth)) throw new Error("the page scrolls sideways");
  await page.getByTestId("paragraph-editor").first().fill("%sql select 'phone' as k, 7 as v");
  await run.click();
  await page.getByTestId("paragraph-status").first().filter({ hasText: "FINISHED" }).waitFor();
  await page.getByTestId("result-table").locator("td", { hasText: /^7$/ }).waitFor();
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: join(screenshotDir, "notebook-page-390.png") });
  // The narrowest screen the page is made for.
  await page.setViewportSize({ width: 360, height: 740 });
  const narrowest = await run.boundingBox();
  if (narrowest.x + narrowest.width > 360) throw new Error(`at 360 px Run is at ${JSON.stringify(narrowest)}`);
  if (await page.evaluate(() => document.documentElement.scrollWidth > innerWidth || document.getElementById("main").scrollWidth > document.getElementById("main").clientWidth)) throw new Error("at 360 px the page scrolls sideways");
  await page.close();
});

test("a note URL opens the note after reload, back/forward move between notes, a deleted note's tabs leave it", async ({ browser, url }) => {
  const page = await browser.newPage();
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(url);
  await createNote(page, "url one");
  const first = page.url();
  if (!/#\/notebook\/[^/]+$/.test(first)) throw new Error(`the URL is ${first}`);
  await page.reload();
  await page.getByTestId("note-title").filter({ hasText: "/url one" }).waitFor();
  await createNote(page, "url two");
  await page.goBack();
  await page.getByTestId("note-title").filter({ hasText: "/url one" }).waitFor();
  await page.goForward();
  await page.getByTestId("note-title").filter({ hasText: "/url two" }).waitFor();
  // A second tab opened from the link; the first deletes the note.
  const other = await browser.newPage();
  await other.goto(page.url());
  await other.getByTestId("note-title").filter({ hasText: "/url two" }).waitFor();
  await page.getByRole("button", { name: "Delete note" }).click();
  await other.locator("#toast", { hasText: "was deleted" }).waitFor();
  await other.getByTestId("note-title").waitFor({ state: "detached" });
  if (!other.url().endsWith("#/")) throw new Error(`the other tab stayed at ${other.url()}`);
  // A link to a note that is not there says so.
  await other.goto(first.replace(/notebook\/.*$/, "notebook/NOSUCHNOTE"));
  await other.getByTestId("missing-note").waitFor();
  await other.close();
  await page.close();
});

test("rename and move to a folder, move and insert paragraphs, undo a delete: all persist after reload", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "to rename");
  await page.getByTestId("rename-note").click();
  await page.getByTestId("rename-input").fill("/projects/q4/renamed");
  await page.getByTestId("rename-input").press("Enter");
  await page.getByTestId("note-title").filter({ hasText: "/projects/q4/renamed" }).waitFor();
  await commitText(page, 0, "%md first");
  await page.getByTestId("add-paragraph").click();
  await page.getByTestId("paragraph").nth(1).waitFor();
  await commitText(page, 1, "%md second");
  // The menu's Move up, then Ctrl+Alt+J on the editor moves it back and up again.
  await page.getByTestId("paragraph").nth(1).getByTestId("paragraph-menu").click();
  await page.getByTestId("paragraph").nth(1).getByTestId("move-up").click();
  await expectTexts(page, ["%md second", "%md first"], "after Move up");
  await page.getByTestId("paragraph").nth(1).getByTestId("paragraph-editor").press("Control+Alt+k");
  await expectTexts(page, ["%md first", "%md second"], "after Ctrl+Alt+K");
  // Insert below the first: the new one is in between, with the focus.
  await page.getByTestId("paragraph").first().getByTestId("paragraph-menu").click();
  await page.getByTestId("paragraph").first().getByTestId("insert-below").click();
  await expectTexts(page, ["%md first", "", "%md second"], "after Insert below");
  await until(page, () => page.getByTestId("paragraph").nth(1).getByTestId("paragraph-editor").evaluate((e) => e === document.activeElement),
    "the inserted paragraph has no focus");
  // Delete the last one, then undo.
  await page.getByTestId("paragraph").nth(2).getByTitle("Remove paragraph").click();
  await expectTexts(page, ["%md first", ""], "after the delete");
  await page.getByTestId("undo-delete").click();
  await expectTexts(page, ["%md first", "", "%md second"], "after Undo");
  await page.waitForTimeout(300);
  await page.reload();
  await page.getByTestId("note-title").filter({ hasText: "/projects/q4/renamed" }).waitFor();
  await expectTexts(page, ["%md first", "", "%md second"], "after reload");
  // The list is a tree: folder projects > q4 > renamed.
  const folder = page.getByTestId("folder").filter({ has: page.locator("summary", { hasText: "q4" }) });
  await folder.getByTestId("note-link").filter({ hasText: /^renamed$/ }).waitFor();
  await page.close();
});

test("Shift+Enter runs and moves to the next paragraph, and the first click on Bar after it sticks", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "keyboard");
  const first = page.getByTestId("paragraph").first();
  await first.getByTestId("paragraph-editor").fill("%sql select 'a' as k, 3 as v union all select 'b', 5");
  await first.getByTestId("paragraph-editor").press("Shift+Enter");
  // No paragraph below: one is created, and it has the focus.
  await page.getByTestId("paragraph").nth(1).waitFor();
  await until(page, () => page.getByTestId("paragraph").nth(1).getByTestId("paragraph-editor").evaluate((e) => e === document.activeElement),
    "the focus did not move to the next paragraph");
  await first.getByTestId("paragraph-status").filter({ hasText: "FINISHED" }).waitFor();
  await first.getByTestId("view-bar").click();
  await first.getByTestId("result-chart").waitFor({ state: "visible" });
  await page.waitForTimeout(700);
  if (!(await first.getByTestId("result-chart").isVisible())) throw new Error("the Bar chart click was undone");
  if ((await first.locator("svg rect").count()) !== 2) throw new Error("not one bar per row");
  // Ctrl+Enter runs in place; Esc leaves the editor.
  const second = page.getByTestId("paragraph").nth(1).getByTestId("paragraph-editor");
  await second.fill("%md in *place*");
  await second.press("Control+Enter");
  await page.getByTestId("paragraph").nth(1).locator(".results em", { hasText: "place" }).waitFor();
  if ((await page.getByTestId("paragraph").count()) !== 2) throw new Error("Ctrl+Enter added a paragraph");
  await page.keyboard.press("Escape");
  if (await page.evaluate(() => document.activeElement.tagName === "TEXTAREA")) throw new Error("Esc kept the editor focused");
  await page.keyboard.press("?");
  await page.getByTestId("shortcuts").waitFor({ state: "visible" });
  await page.close();
});

test("the editor grows, indents with Tab, pairs brackets; a run %md paragraph shows its source on double-click", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "editor");
  const editor = page.getByTestId("paragraph-editor").first();
  const before = (await editor.boundingBox()).height;
  await editor.fill(Array.from({ length: 12 }, (_, i) => `line ${i}`).join("\n"));
  const after = (await editor.boundingBox()).height;
  if (after < before * 3) throw new Error(`the editor grew from ${before} to ${after} px only`);
  if (await editor.evaluate((e) => e.scrollHeight > e.clientHeight + 4)) throw new Error("the editor scrolls inside");
  await editor.fill("");
  await editor.press("Tab");
  await editor.type("f(x");
  if ((await editor.inputValue()) !== "  f(x)") throw new Error(`typed "${await editor.inputValue()}"`);
  // Syntax colours behind the text, laid out exactly as the text is.
  await editor.fill("%sql select 'x' as k -- note\n" + "where ".repeat(40));
  const card0 = page.getByTestId("paragraph").first();
  await card0.locator("pre.highlight .hl-kw", { hasText: "select" }).first().waitFor();
  await card0.locator("pre.highlight .hl-str", { hasText: "'x'" }).waitFor();
  await card0.locator("pre.highlight .hl-com", { hasText: "-- note" }).waitFor();
  const heights = await card0.evaluate((c) => [c.querySelector("pre.highlight").scrollHeight, c.querySelector("textarea").scrollHeight]);
  if (Math.abs(heights[0] - heights[1]) > 2) throw new Error(`highlight and text heights differ: ${heights}`);
  await editor.fill("%md # Rendered");
  await editor.press("Control+Enter");
  const card = page.getByTestId("paragraph").first();
  await card.locator(".results h1", { hasText: "Rendered" }).waitFor();
  await editor.blur();
  await editor.waitFor({ state: "hidden" });
  await card.locator(".results h1").dblclick();
  await editor.waitFor({ state: "visible" });
  await page.close();
});

test("Ctrl+Space completes SQL keywords and the database's tables and columns", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "completion");
  await runInParagraph(page, 0, "%sql create table if not exists planets (planet_name text, moons integer)");
  const editor = page.getByTestId("paragraph-editor").first();
  const list = page.getByTestId("completions");
  const expectText = async (want) => {
    const got = await editor.inputValue();
    if (got !== want) throw new Error(`editor holds ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  };
  // A keyword, taken with Enter.
  await editor.fill("%sql SEL");
  await editor.press("Control+Space");
  await list.locator("li", { hasText: "SELECT" }).first().waitFor();
  await editor.press("Enter");
  await list.waitFor({ state: "detached" });
  await expectText("%sql SELECT");
  // A table of the database, picked with the mouse.
  await editor.type(" * from pla");
  await editor.press("Control+Space");
  await list.locator("li", { hasText: "planets" }).first().click();
  await list.waitFor({ state: "detached" });
  await expectText("%sql SELECT * from planets");
  // A column: the list follows the typing, Esc leaves the text alone.
  await editor.type(" where moo");
  await editor.press("Control+Space");
  await list.locator("li", { hasText: "moons" }).first().waitFor();
  await editor.type("n");
  await list.locator("li", { hasText: "moons" }).first().waitFor();
  await editor.press("Escape");
  await list.waitFor({ state: "detached" });
  await expectText("%sql SELECT * from planets where moon");
  if (!(await editor.evaluate((e) => e === document.activeElement))) throw new Error("Esc on the list left the editor");
  await editor.press("Control+Space");
  await list.locator("li", { hasText: "moons" }).first().waitFor();
  await editor.press("Tab");
  await expectText("%sql SELECT * from planets where moons");
  // Leaving the word closes the list: moving the cursor, or typing past it
  // (then Enter is a new line again, not a pick).
  await editor.fill("%sql SEL");
  await editor.press("Control+Space");
  await list.locator("li", { hasText: "SELECT" }).first().waitFor();
  await editor.press("ArrowLeft");
  await list.waitFor({ state: "detached" });
  await editor.press("End");
  await editor.press("Control+Space");
  await list.locator("li", { hasText: "SELECT" }).first().waitFor();
  await editor.type(" ");
  await list.waitFor({ state: "detached" });
  await editor.press("Enter");
  await expectText("%sql SEL \n");
  await page.close();
});

test("a table sorts by a column; a line chart's settings survive reload", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "charts");
  const sql = "%sql select 'b' as day, 20 as hits, 1 as errors, null as note union all select 'a', 100, 3, 'null' union all select 'c', 3, 0, 'x'";
  const card = await runInParagraph(page, 0, sql);
  const table = card.getByTestId("result-table");
  const column = async (i) => table.locator("tbody tr").evaluateAll((rows, i) => rows.map((r) => r.cells[i].textContent), i);
  await table.locator("th", { hasText: "hits" }).click();
  if (String(await column(1)) !== "3,20,100") throw new Error(`ascending: ${await column(1)}`);
  await table.locator("th", { hasText: "hits" }).click();
  if (String(await column(1)) !== "100,20,3") throw new Error(`descending: ${await column(1)}`);
  if (!(await table.locator("td.num").first().isVisible())) throw new Error("numbers are not right-aligned");
  const [download] = await Promise.all([page.waitForEvent("download"), card.getByTestId("download-csv").click()]);
  const csv = readFileSync(await download.path(), "utf8");
  if (!csv.startsWith("day,hits,errors,note\nb,20,1,\na,100,3,null\n")) throw new Error(`the CSV is ${JSON.stringify(csv)}`);
  await card.getByTestId("view-line").click();
  await card.getByTestId("chart-key").selectOption({ label: "day" });
  await until(page, async () => (await card.getByTestId("chart-value").count()) === 2, "value columns not offered");
  const errors = card.getByTestId("chart-value").nth(1);
  if (await errors.isChecked()) await errors.uncheck(); else throw new Error("errors was not drawn by default");
  await until(page, async () => (await card.locator("svg polyline").count()) === 1, "unchecking a value left its line");
  await page.waitForTimeout(300);
  await page.reload();
  const again = page.getByTestId("paragraph").first();
  await again.getByTestId("result-chart").waitFor();
  if ((await again.getByTestId("result-chart").getAttribute("data-mode")) !== "line") throw new Error("not a line chart after reload");
  if ((await again.locator("svg polyline").count()) !== 1) throw new Error("the value choice was lost");
  const key = await again.getByTestId("chart-key").evaluate((s) => s.options[s.selectedIndex].text);
  if (key !== "day") throw new Error(`key column is ${key} after reload`);
  // Saved as Zeppelin saves it.
  const graph = await page.evaluate(() => note.paragraphs[0].config.results[0].graph);
  if (graph.mode !== "lineChart" || graph.keys[0].name !== "day" || graph.values.map((v) => v.name).join() !== "hits") {
    throw new Error(`config.results[0].graph is ${JSON.stringify(graph)}`);
  }
  await page.close();
});

test("NULL differs from the string 'null', a tab in a value shows, downloads keep exact values", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "exact values");
  const card = await runInParagraph(page, 0, "%sql select null as a, 'null' as b, 'x'||char(9)||'y' as c");
  const cells = card.getByTestId("result-table").locator("tbody td");
  await cells.first().waitFor();
  const seen = JSON.stringify(await cells.evaluateAll((tds) => tds.map((td) => [td.className, td.textContent])));
  const wanted = JSON.stringify([["null", "NULL"], ["", "null"], ["", "x⇥\ty"]]);
  if (seen !== wanted) throw new Error(`the cells are ${seen}, not ${wanted}`);
  const downloaded = async (testid) => {
    const [download] = await Promise.all([page.waitForEvent("download"), card.getByTestId(testid).click()]);
    return readFileSync(await download.path(), "utf8");
  };
  const tsv = await downloaded("download-tsv");
  if (tsv !== "a\tb\tc\n\\N\tnull\tx\\ty\n") throw new Error(`the TSV is ${JSON.stringify(tsv)}`);
  const csv = await downloaded("download-csv");
  if (csv !== "a,b,c\n,null,x\ty\n") throw new Error(`the CSV is ${JSON.stringify(csv)}`);
  await page.close();
});

test("Restart interpreter in the paragraph menu calls the restart endpoint and shows its reply", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "restart");
  const calls = [];
  let reply = { status: 200, contentType: "application/json", body: JSON.stringify({ status: "OK", message: "" }) };
  await page.route("**/api/interpreter/setting/restart/**", async (route) => {
    calls.push({ method: route.request().method(), path: new URL(route.request().url()).pathname });
    await route.fulfill(reply);
  });
  const card = page.getByTestId("paragraph").first();
  const restart = async () => {
    await card.getByTestId("paragraph-menu").click();
    await card.getByTestId("restart-interpreter").click();
  };
  await card.getByTestId("paragraph-editor").fill("%md no process here");
  await card.getByTestId("paragraph-menu").click();
  if (await card.getByTestId("restart-interpreter").isVisible()) throw new Error("Restart is offered for %md");
  await card.getByTestId("paragraph-menu").click();
  await card.getByTestId("paragraph-editor").fill("%pyspark\nspark.range(3).count()");
  await restart();
  await until(page, () => calls.length === 1, "the endpoint was not called");
  if (calls[0].method !== "PUT" || calls[0].path !== "/api/interpreter/setting/restart/spark") throw new Error(`called ${JSON.stringify(calls[0])}`);
  await page.locator("#toast", { hasText: "Restarted the spark interpreter." }).waitFor();
  // A server without the endpoint, then one that refuses.
  reply = { status: 404, contentType: "text/plain", body: "Not Found" };
  await card.getByTestId("paragraph-editor").fill("%python print(1)");
  await restart();
  await page.locator("#toast", { hasText: "This server cannot restart interpreters" }).waitFor();
  reply = { status: 500, contentType: "application/json", body: JSON.stringify({ status: "INTERNAL_SERVER_ERROR", message: "python did not stop" }) };
  await restart();
  await page.locator("#toast", { hasText: "Could not restart python: python did not stop" }).waitFor();
  if (calls.length !== 3 || calls[2].path !== "/api/interpreter/setting/restart/python") throw new Error(`calls: ${JSON.stringify(calls)}`);
  await page.close();
});

test("run feedback: elapsed time while running, then how long it took; a cancel says so", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "timing");
  const card = page.getByTestId("paragraph").first();
  await card.getByTestId("paragraph-editor").fill(
    "%sql with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c");
  await card.getByTestId("run-paragraph").click();
  await card.getByTestId("run-info").filter({ hasText: /^running (< 1|\d+) s$/ }).waitFor();
  await card.getByTestId("run-info").filter({ hasText: /^running [1-9]\d* s$/ }).waitFor({ timeout: 5000 });
  await card.getByTestId("cancel-paragraph").click();
  await card.getByTestId("paragraph-status").filter({ hasText: "ABORT" }).waitFor();
  await card.getByTestId("run-info").filter({ hasText: /^cancelled after .* s, at \d\d:\d\d$/ }).waitFor();
  await runInParagraph(page, 0, "%sql select 1");
  await card.getByTestId("run-info").filter({ hasText: /^took .* s, finished at \d\d:\d\d$/ }).waitFor();
  // Run all stops at the failing paragraph and says so.
  await page.getByTestId("add-paragraph").click();
  await page.getByTestId("paragraph").nth(1).getByTestId("paragraph-editor").fill("%sql select * from no_such_table");
  await page.getByTestId("add-paragraph").click();
  await page.getByTestId("paragraph").nth(2).getByTestId("paragraph-editor").fill("%md never");
  await page.getByTestId("run-all").click();
  await page.getByTestId("run-all-status").filter({ hasText: /stopped at paragraph 2 .*no such table/ }).waitFor();
  await page.close();
});

test("a run stopped by the time limit says so, not just ERROR", async ({ browser }) => {
  // A server of its own with a 1 s %sql budget.
  const dir = mkdtempSync(join(tmpdir(), "wsloop-browser-limit-"));
  writeFileSync(join(dir, "wsloop.toml"), '[notebook]\nsql_timeout = "1s"\n');
  const port = await freePort();
  const server = await startServer(port, join(dir, "notes"), ["--config", join(dir, "wsloop.toml")]);
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    await createNote(page, "slow");
    const card = await runInParagraph(page, 0,
      "%sql with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c");
    await card.getByTestId("paragraph-status").filter({ hasText: "ERROR" }).waitFor();
    await card.getByTestId("run-info").filter({ hasText: /^stopped at the time limit after .* s, at \d\d:\d\d$/ }).waitFor();
    await page.close();
  } finally {
    await stopServer(server);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("streamed output ops append to and replace a paragraph's output live", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "streaming");
  const card = await runInParagraph(page, 0, "%md start");
  // The server's interpreters do not stream yet: feed the page the ops.
  await page.evaluate(() => {
    const p = note.paragraphs[0];
    handle("PARAGRAPH_UPDATE_OUTPUT", { noteId: note.id, paragraphId: p.id, index: 1, type: "TEXT", data: "line 1\n" });
    handle("PARAGRAPH_APPEND_OUTPUT", { noteId: note.id, paragraphId: p.id, index: 1, data: "line 2\n" });
  });
  await card.locator(".results pre", { hasText: "line 1\nline 2" }).waitFor();
  await page.close();
});

test("PROGRESS shows in a running paragraph's run info and goes when it ends", async ({ browser, url }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "progress");
  const card = page.getByTestId("paragraph").first();
  await card.getByTestId("paragraph-editor").fill("%sh sleep 3");
  await card.getByTestId("run-paragraph").click();
  await card.getByTestId("paragraph-status").filter({ hasText: "RUNNING" }).waitFor();
  // Spark's jobs report progress (tests/spark checks the server's side).
  await page.evaluate(() => handle("PROGRESS", { id: note.paragraphs[0].id, progress: 42 }));
  await card.getByTestId("run-info").filter({ hasText: /running .*· 42%/ }).waitFor();
  await card.getByTestId("paragraph-status").filter({ hasText: "FINISHED" }).waitFor({ timeout: 15000 });
  const info = await card.getByTestId("run-info").textContent();
  if (info.includes("%")) throw new Error(`progress left after the run: ${info}`);
  await page.close();
});

test("a paragraph committed in another tab while it is edited here asks theirs or mine", async ({ browser, url }) => {
  const [first, second] = await twoTabsOnNewNote(browser, url, "conflict");
  const mine = first.getByTestId("paragraph").first().getByTestId("paragraph-editor");
  const theirs = second.getByTestId("paragraph").first().getByTestId("paragraph-editor");
  await mine.fill("%md mine");
  await theirs.fill("%md theirs");
  await theirs.blur();
  await first.getByTestId("conflict").waitFor();
  if ((await mine.inputValue()) !== "%md mine") throw new Error("my text was overwritten");
  await first.getByTestId("conflict-mine").click();
  await until(second, async () => (await theirs.inputValue()) === "%md mine", "keeping mine did not reach the other tab");
  await first.close();
  await second.close();
});

test("after a restart the page reconnects within 1.5 s of the server coming back", async ({ browser, url, restart }) => {
  const page = await browser.newPage();
  await page.goto(url);
  await createNote(page, "quick reconnect");
  let back;
  await restart(async () => {
    await page.getByTestId("banner").filter({ hasText: "Connection lost" }).waitFor({ state: "visible" });
    // The banner sits below the title and toolbar, not over them.
    const bannerBox = await page.getByTestId("banner").boundingBox();
    const toolbar = await page.locator(".toolbar").boundingBox();
    if (bannerBox.y < toolbar.y + toolbar.height) throw new Error("the banner covers the toolbar");
    await page.waitForTimeout(3500);
  });
  back = Date.now();
  await page.getByTestId("banner").waitFor({ state: "hidden", timeout: 10000 });
  const took = Date.now() - back;
  if (took > 1500) throw new Error(`reconnected ${took} ms after the server came back`);
  await page.close();
});

test("screenshots at 1280 and 390 px", async ({ browser, url }) => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  await page.goto(url);
  for (const other of ["Getting started", "reports/Daily load"]) await createNote(page, other);
  await createNote(page, "reports/Weekly sales");
  await runInParagraph(page, 0, "%md ## Weekly sales\nUnits sold per region, from the `%sql` database.");
  await page.getByTestId("add-paragraph").click();
  await page.getByTestId("paragraph").nth(1).waitFor();
  const chart = await runInParagraph(page, 1,
    "%sql select 'north' as region, 120 as units, 30 as returns union all select 'south', 95, 12 union all select 'east', 143, 20 union all select 'west', 77, 9");
  await chart.getByTestId("view-bar").click();
  await page.getByTestId("add-paragraph").click();
  await page.getByTestId("paragraph").nth(2).waitFor();
  const table = await runInParagraph(page, 2, "%sql select 'north' as region, 120 as units, null as note union all select 'south', 95, 'late'");
  await table.getByTestId("result-table").waitFor();
  await page.locator("body").click({ position: { x: 640, y: 5 } });
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: join(screenshotDir, "notebook-page.png") });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(200);
  await page.screenshot({ path: join(screenshotDir, "notebook-page-390.png") });
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
// WSLOOP_TEST_FILTER=text runs only the tests whose name contains it.
const only = process.env.WSLOOP_TEST_FILTER || "";
for (const { name, body } of tests.filter((t) => t.name.includes(only))) {
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
