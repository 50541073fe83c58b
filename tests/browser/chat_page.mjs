// Drives the chat page of a running `ocular serve` in headless Chromium, as a user would: pick an
// image, type a question, press Send, watch the answer stream in, and check each box is drawn on
// the canvas over the image; then start a new chat and attach the image by pasting and by
// dropping it. Prints one JSON line {"answer": ..., "updates": n, "boxes": [...]} and exits 0, or
// prints one line saying what went wrong and exits 1. Any page error or console error counts as
// a failure: the page must run clean.
//
//   OCULAR_URL  server to test (default http://127.0.0.1:8080)
//   IMAGE       image file to upload (required)
//   QUESTION    what to ask (default "What is in the image?")
//   EXPECT_BOXES  fail unless at least this many boxes are drawn (default 0)
//   CHROMIUM    browser executable (default /usr/bin/chromium; playwright-core brings none)
//
//   cd tests/browser && npm install && IMAGE=../fixtures/image/noise_64x48.png node chat_page.mjs
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { chromium } from "playwright-core";

const TIMEOUT_MS = 60_000;
const url = (process.env.OCULAR_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
const image = process.env.IMAGE && resolve(process.env.IMAGE);
const question = process.env.QUESTION || "What is in the image?";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const expectBoxes = Number(process.env.EXPECT_BOXES || 0);

// Playwright's messages end in a multi-line call log: the first part says enough.
const oneLine = (s) => String(s).split(/\n\s*Call log:/)[0].replace(/\s+/g, " ").trim();
function fail(message) {
  console.error(`chat_page: FAIL: ${oneLine(message)}`);
  process.exit(1);
}

if (!image || !existsSync(image)) fail(`IMAGE must name an image file (got ${process.env.IMAGE ?? "nothing"})`);
if (!existsSync(executablePath)) fail(`no browser at ${executablePath}; install chromium or set CHROMIUM`);
if (!Number.isInteger(expectBoxes) || expectBoxes < 0) fail(`EXPECT_BOXES must be a whole number, got ${process.env.EXPECT_BOXES}`);

// Whether the overlay canvas has paint on the left edge of `box` (original-image pixels), at
// mid-height, and in its centre: a drawn box outline has the first and not the second.
function inkAround(page, box) {
  return page.evaluate(([x1, y1, x2, y2]) => {
    const img = document.getElementById("preview"), canvas = document.getElementById("overlay");
    const s = canvas.width / img.naturalWidth, ctx = canvas.getContext("2d");
    const alpha = (x, y) => {
      const [cx, cy] = [Math.round(x * s), Math.round(y * s)];
      // A few canvas pixels around the point, as the outline is a couple of pixels wide.
      const d = ctx.getImageData(Math.max(0, cx - 2), Math.max(0, cy - 2), 5, 5).data;
      return Math.max(...d.filter((_, i) => i % 4 === 3));
    };
    const small = x2 - x1 < 12 || y2 - y1 < 12;  // too small to have a clean inside
    return { edge: alpha(x1, (y1 + y2) / 2) > 0, inside: !small && alpha((x1 + x2) / 2, (y1 + y2) / 2) > 0 };
  }, box);
}

// Starts a new chat and attaches the image with a synthetic paste or drop event carrying it as
// a file, as the clipboard or a drag from the desktop does; fails unless the page shows it.
async function attachByEvent(page, kind) {
  await page.click("#reset");
  const bytes = readFileSync(image).toString("base64");
  await page.evaluate(([kind, bytes]) => {
    const data = Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([data], "pasted.png", { type: "image/png" }));
    const event = kind === "paste"
      ? new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true })
      : new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true });
    (kind === "paste" ? document : window).dispatchEvent(event);
  }, [kind, bytes]);
  await page.locator("#overlay").waitFor({ state: "visible", timeout: 10_000 })
    .catch(() => { throw new Error(`a ${kind}d image was not shown`); });
  const src = await page.locator("#preview").getAttribute("src");
  if (!src || !src.startsWith("data:image/png;base64,")) throw new Error(`a ${kind}d image was not attached (src ${String(src).slice(0, 30)})`);
}

let browser;
try {
  browser = await chromium.launch({ executablePath, headless: true });
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  // A script error ends the wait at once rather than as a timeout a minute later.
  const pageError = new Promise((_, reject) => page.on("pageerror", (e) => reject(new Error(`page error: ${e.message}`))));
  pageError.catch(() => {});  // raced below; never an unhandled rejection

  const response = await page.goto(url + "/", { timeout: 15_000 });
  if (!response || !response.ok()) throw new Error(`GET ${url}/ answered ${response ? response.status() : "nothing"}`);

  await page.setInputFiles("#image-input", image);
  // The page reads the file asynchronously; the overlay shows (with the image) once it is attached.
  await Promise.race([page.locator("#overlay").waitFor({ state: "visible", timeout: 10_000 }), pageError]);
  await page.fill("#prompt", question);
  // Counts the distinct texts the page writes into the answer while it streams, before it is
  // marked done. Counted where the page sets them, not by a MutationObserver: mutation records
  // are delivered once per task, so every piece that arrives in one network read (as when the
  // browser is slow to start reading, on a cold start) would count as one update.
  await page.evaluate(() => {
    window.__updates = new Set();
    const text = Object.getOwnPropertyDescriptor(Node.prototype, "textContent");
    Object.defineProperty(Node.prototype, "textContent", {
      ...text,
      set(value) {
        text.set.call(this, value);
        if (value && this.classList?.contains("assistant") && this.dataset.done !== "true") window.__updates.add(value);
      },
    });
  });
  await page.click("#send");

  // Done when the last answer is complete, or the page shows an error (a non-200 answer, say).
  const finished = page.waitForFunction(() => {
    const last = [...document.querySelectorAll(".assistant")].pop();
    return (last && last.dataset.done === "true") || document.getElementById("error").textContent.trim();
  }, null, { timeout: TIMEOUT_MS });
  try {
    await Promise.race([finished, pageError]);
  } catch (e) {
    throw new Error(e.name === "TimeoutError" ? `no complete answer within ${TIMEOUT_MS / 1000} s` : e.message);
  }

  const shown = await page.locator("#error").textContent();
  if (shown.trim()) throw new Error(`the page shows an error: ${shown}`);
  if (consoleErrors.length) throw new Error(`console error: ${consoleErrors[0]}`);
  const answer = (await page.locator(".assistant").last().textContent()).trim();
  const boxes = JSON.parse(await page.locator("#overlay").getAttribute("data-boxes"));
  if (!answer) throw new Error("the answer is empty");
  if (boxes.length < expectBoxes) throw new Error(`expected at least ${expectBoxes} boxes, ${boxes.length} drawn (answer: ${answer})`);
  const updates = await page.evaluate(() => window.__updates.size);
  if (answer.length > 1 && updates < 2) throw new Error(`the answer appeared at once, not streamed (${updates} update)`);
  for (const b of boxes) {
    const ink = await inkAround(page, b.box);
    if (!ink.edge || ink.inside) throw new Error(`box ${JSON.stringify(b.box)} is not drawn (edge ${ink.edge}, inside ${ink.inside})`);
  }
  await attachByEvent(page, "paste");
  await attachByEvent(page, "drop");
  console.log(JSON.stringify({ answer, updates, boxes }));
} catch (e) {
  await browser?.close().catch(() => {});
  fail(e.message);
}
await browser.close();
