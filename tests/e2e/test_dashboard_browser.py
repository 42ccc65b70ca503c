"""The dashboard in a real browser (Playwright driving Debian's Chromium) against `isthmus dev --keyed` (its own
DynamoDB Local, a live node agent on the tiny model, the edge; an admin token set) and a fake cloud provider on
loopback. One browser, one page, the steps in order: a wrong token, sign-in, the live node, a cloud provider
and its alias in Models, a user, budget and key, a chat with that key, usage and spend, a load with its
progress bar and an unload, user strings rendered as text.

With ``ISTHMUS_SCREENSHOTS=<dir>`` the run writes PNGs of the main pages there (docs/dashboard in the README).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_runtime.ddb import free_port
from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.fake_providers import FakeProviders
from tests.support.waiting import poll

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")]

MASTER = "sk-master-dashboard-e2e"
ADMIN = "admin-token-dashboard-e2e"
NODE = "dash-node"
XSS = "<script>window.__pwned=1</script>"
WAIT_MS = 60_000  # an upper bound on waits for the page, never a performance target
SHOTS = os.environ.get("ISTHMUS_SCREENSHOTS")
ROOT = Path(__file__).resolve().parents[2]
# What the shell may carry that would point the stack elsewhere than its own data dir (as in test_dev_stack.py).
_SCRUBBED = ("ISTHMUS_DYNAMODB_ENDPOINT", "ISTHMUS_TABLE_PREFIX", "ISTHMUS_LOCAL_KEY_FILE", "ISTHMUS_MASTER_KEY",
             "ISTHMUS_DEFAULT_AGENT_URL", "ISTHMUS_CONTROL_URL", "ISTHMUS_MODELS_DIR", "ISTHMUS_ADMIN_TOKEN")


class Stack:
    def __init__(self, edge: str, providers: FakeProviders, tiny_model: Path) -> None:
        self.edge, self.providers, self.tiny_model = edge, providers, tiny_model


@pytest.fixture(scope="module")
def stack(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`isthmus dev --keyed` with the tiny model (its own DynamoDB Local, node agent and edge), an admin token, and
    a fake OpenAI-protocol provider on loopback."""
    providers = FakeProviders().start()
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers"), str(ROOT / "shared"),
                                               env.get("PYTHONPATH", "")]),
                "ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_ADMIN_TOKEN": ADMIN, "ISTHMUS_NODE_ID": NODE})
    port, data = free_port(), tmp_path_factory.mktemp("dash-dev")
    log = (data / "console.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "local_runtime.cli", "dev", "--keyed", "--model", str(tiny_model),
                             "--port", str(port), "--ddb-port", str(free_port()), "--agent-port", str(free_port()),
                             "--data-dir", str(data)], cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def up() -> bool:
            assert proc.poll() is None, (data / "console.log").read_text()
            return "Isthmus is up" in (data / "console.log").read_text()
        poll(up, timeout=240)
        yield Stack(f"http://127.0.0.1:{port}", providers, tiny_model)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        providers.stop()


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.errors = []
        tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
        # console errors other than the browser's own line for each non-2xx answer (a 401 or 501 is expected here)
        tab.on("console", lambda msg: tab.errors.append(msg.text)
               if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
        yield tab
        context.close()
        browser.close()


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def dollars(text: str | None) -> float:
    """A money card's value ("$0.0011") as a number; 0 for anything else ("—" before the data came)."""
    return float(text[1:].replace(",", "")) if text and text.startswith("$") else 0.0


def go(page: Any, stack: Stack, where: str) -> None:
    page.goto(f"{stack.edge}/dashboard/#/{where}")


def sign_in(page: Any, admin: str, master: str) -> None:
    page.fill("#admin-token", admin)
    page.fill("#master-key", master)
    page.click("#signin")


def test_the_dashboard_is_served_with_a_strict_csp(stack: Stack) -> None:
    r = httpx.get(f"{stack.edge}/dashboard/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    js = httpx.get(f"{stack.edge}/dashboard/js/app.js", timeout=10)
    assert js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{stack.edge}/dashboard/js/app.js", headers={"if-none-match": js.headers["etag"]},
                     timeout=10).status_code == 304
    assert httpx.get(f"{stack.edge}/dashboard/../template.yaml", timeout=10).status_code == 404
    assert httpx.get(f"{stack.edge}/dashboard", timeout=10, follow_redirects=True).url.path == "/dashboard/"


def test_a_wrong_token_shows_an_error_and_no_data(page: Any, stack: Stack) -> None:
    # given the sign-in page
    go(page, stack, "overview")
    # when the operator types wrong tokens
    sign_in(page, "not-the-admin-token", "sk-master-wrong")
    # then an error names what was refused, and no page nor data is shown
    error = page.locator(".signin .error")
    error.wait_for()
    assert "refused" in error.text_content()
    assert page.locator("nav a").count() == 0 and page.locator("table").count() == 0
    assert NODE not in page.content()


def test_sign_in_shows_the_live_node(page: Any, stack: Stack) -> None:
    go(page, stack, "overview")
    sign_in(page, ADMIN, MASTER)
    # then the overview lists the enrolled agent as up (once its heartbeat says it loaded), with its heartbeat age
    row = page.locator("#overview tr", has_text=NODE).filter(has=page.locator("span.ok", has_text="up"))
    row.wait_for()
    assert "ago" in row.text_content()
    # first paint of the overview on a reload (printed, not asserted)
    page.reload()
    page.locator("#overview tr", has_text=NODE).wait_for()
    paint = page.evaluate("() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
    data = page.evaluate("() => (performance.getEntriesByName('isthmus:overview-rendered')[0] || {}).startTime")
    print(f"\ndashboard overview: first contentful paint {paint:.0f} ms, first data rendered at {data:.0f} ms")
    shot(page, "overview")


def test_a_cloud_provider_is_added_and_its_alias_is_in_models(page: Any, stack: Stack) -> None:
    go(page, stack, "providers")
    form = page.locator("#add-provider")
    form.locator("[name=id]").fill("loopback-openai")
    form.locator("[name=template]").select_option("openai")
    form.locator("[name=api_base]").fill(stack.providers.openai_base)
    form.locator("[name=api_key]").fill("sk-fake-upstream-key")
    form.locator("[name=alias]").fill("dash-gpt")
    form.locator("[name=upstream_model]").fill("gpt-dash")
    form.locator("[name=headers]").fill(f"X-Title: {XSS}")
    form.locator("button[type=submit]").click()
    row = page.locator("tr", has_text="loopback-openai")
    row.wait_for()
    # the key is never shown again, only that it is set; the header value is shown as text, not run
    assert "set" in row.text_content() and "sk-fake-upstream-key" not in page.content()
    assert page.locator(".provider-header", has_text=XSS).count() == 1
    assert page.evaluate("() => window.__pwned") is None
    shot(page, "providers")
    go(page, stack, "models")
    page.locator("code", has_text="dash-gpt").wait_for()
    shot(page, "models")


def test_user_budget_and_key_then_a_chat_shows_in_usage(page: Any, stack: Stack) -> None:
    go(page, stack, "access")
    page.click("[data-tab=budgets]")
    budget = page.locator("[data-tab-body=budgets] #new-budget")
    budget.locator("[name=budget_id]").fill("dash-budget")
    budget.locator("[name=max_budget]").fill("5")
    budget.locator("button[type=submit]").click()
    page.locator("td", has_text="dash-budget").first.wait_for()
    page.once("dialog", lambda dialog: dialog.accept("6"))  # edit its max in place
    page.locator("[data-tab-body=budgets] tr", has_text="dash-budget").locator("button", has_text="Edit max").click()
    page.locator("[data-tab-body=budgets] td", has_text="$6.00").wait_for()
    page.click("[data-tab=users]")
    user = page.locator("[data-tab-body=users] #new-user")
    user.locator("[name=user_id]").fill("dash-user")
    user.locator("[name=alias]").fill(XSS)
    user.locator("[name=metadata]").fill('{"note": "<img src=x onerror=window.__pwned=2>"}')
    user.locator("[name=budget_id]").select_option("dash-budget")
    user.locator("button[type=submit]").click()
    page.locator("td", has_text="dash-user").first.wait_for()
    assert page.locator("td", has_text=XSS).count() == 1 and page.evaluate("() => window.__pwned") is None
    assert page.locator("code", has_text="<img src=x onerror=window.__pwned=2>").count() == 1  # metadata as text
    page.click("[data-tab=keys]")
    key = page.locator("[data-tab-body=keys] #new-key")
    key.locator("[name=key_name]").fill("dash-key")
    key.locator("[name=user_id]").select_option("dash-user")
    key.locator("button[type=submit]").click()
    secret = page.locator(".new-secret .secret-value")
    secret.wait_for()
    api_key = secret.text_content()
    assert api_key.startswith("gw-")
    shot(page, "keys")
    # shown once: after leaving the tab the secret is nowhere on the page
    page.click("[data-tab=users]")
    page.locator("[data-tab-body=users] td", has_text="dash-user").first.wait_for()
    page.click("[data-tab=keys]")
    page.locator("[data-tab-body=keys] td", has_text="dash-key").first.wait_for()
    assert api_key not in page.content()
    # a price for the alias, through the pricing page
    go(page, stack, "pricing")
    price = page.locator("#set-price")
    price.locator("[name=model_key]").fill("dash-gpt")
    price.locator("[name=input]").fill("100")
    price.locator("[name=output]").fill("200")
    price.locator("button[type=submit]").click()
    page.locator("code", has_text="dash-gpt").wait_for()
    # when a client chats with the new key
    r = httpx.post(f"{stack.edge}/v1/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                   json={"model": "dash-gpt", "messages": [{"role": "user", "content": "hello dashboard"}],
                         "max_tokens": 32},
                   timeout=60)
    assert r.status_code == 200, r.text
    # then the usage page charts it and the spend is above zero
    go(page, stack, "usage")
    page.locator("#usage-filters [name=user_id]").select_option("dash-user")
    page.click("#usage-filters button[type=submit]")

    def charted() -> bool:  # the usage row is settled in the background (batched): refresh until it is there
        page.locator("#usage-body:not([data-loading])").wait_for()
        if page.locator("#usage-chart[data-rows='1']").count():
            return True
        page.click("#usage-refresh")
        return False
    try:
        poll(charted, timeout=30)
    except AssertionError:
        raise AssertionError(page.locator("#usage-body").text_content()) from None
    assert dollars(page.locator("#usage-body .card", has_text="Spend").locator(".value").text_content()) > 0
    assert page.locator("#usage-body td", has_text="dash-gpt").count() == 1
    shot(page, "usage")
    with page.expect_download() as download:  # the CSV export holds the row shown
        page.click("#export-csv")
    csv_lines = Path(download.value.path()).read_text().splitlines()
    assert csv_lines[0].startswith("timestamp,id,user_id") and len(csv_lines) == 2 and ",dash-gpt," in csv_lines[1]
    go(page, stack, "overview")
    today = page.locator("#overview .card", has_text="Spend today").locator(".value")
    poll(lambda: dollars(today.text_content()) > 0, timeout=30)


def test_a_batch_completes_on_the_page_and_its_output_downloads(page: Any, stack: Stack) -> None:
    # given a JSONL of 3 chat lines and a file named with <script>, uploaded with the master key, and a batch
    jsonl = "".join(json.dumps({"custom_id": f"dash-{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "default", "max_tokens": 4,
                                         "messages": [{"role": "user", "content": f"count to {i}"}]}}) + "\n"
                    for i in range(3))
    with httpx.Client(base_url=stack.edge, headers={"authorization": f"Bearer {MASTER}"}, timeout=30) as client:
        upload = client.post("/v1/files", data={"purpose": "batch"},
                             files={"file": ("dash-requests.jsonl", jsonl.encode(), "application/jsonl")})
        assert upload.status_code == 200, upload.text
        named = client.post("/v1/files", data={"purpose": "user_data"},
                            files={"file": (f"{XSS}.txt", b"not a batch", "text/plain")})
        assert named.status_code == 200, named.text
        created = client.post("/v1/batches", json={"input_file_id": upload.json()["id"], "completion_window": "24h",
                                                   "endpoint": "/v1/chat/completions", "metadata": {"note": XSS}})
        assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    # when the operator opens the page
    go(page, stack, "batches")
    row = page.locator("#batches tr", has=page.locator(f"[data-batch='{batch_id}']"))
    # then it follows the batch to completed, its bar at 100 %
    try:
        row.locator("[data-status=completed]").wait_for()
    except playwright_api.Error:
        raise AssertionError(row.text_content()) from None
    assert row.locator("[role=progressbar]").get_attribute("aria-valuenow") == "100"
    assert "3 / 3" in row.text_content()
    # and its output downloads through the page (fetch with the token -> Blob -> <a download>) under the CSP
    with page.expect_download() as download:
        row.locator("button", has_text="Output").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert download.value.suggested_filename == f"{batch_id}_output.jsonl"
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["dash-0", "dash-1", "dash-2"]
    # and user strings (a file name, metadata) are text that never runs
    assert page.locator("#files .file-name", has_text=XSS).count() == 1
    assert row.locator("code", has_text=f"note: {XSS}").count() == 1
    assert page.evaluate("() => window.__pwned") is None
    shot(page, "batches")
    assert not page.errors, page.errors


def test_the_files_list_pages_older_and_newer(page: Any, stack: Stack) -> None:
    # given more files than one page holds (20): the 3 of the batch test and 20 more
    with httpx.Client(base_url=stack.edge, headers={"authorization": f"Bearer {MASTER}"}, timeout=30) as client:
        uploaded = [client.post("/v1/files", data={"purpose": "user_data"},
                                files={"file": (f"dash-page-{i:02}.txt", b"x", "text/plain")}).json()["id"]
                    for i in range(20)]
        every = {f["id"] for f in client.get("/v1/files").json()["data"]}
    assert len(every) == 23 and set(uploaded) <= every
    go(page, stack, "batches")  # the page is open already (the test before): its Refresh lists the new files
    page.click("#batches-refresh")
    page.locator("#files [data-file]").nth(19).wait_for()
    shown = lambda: {c.text_content() for c in page.locator("#files [data-file]").all()}  # noqa: E731
    page.locator("#files [data-pager=files] span", has_text="page 1").wait_for()
    first = shown()
    # when the operator pages to older files, then the rest are there, none twice; and back to the newer ones
    page.locator("#files [data-pager=files] button", has_text="Older").click()
    page.locator("#files [data-pager=files] span", has_text="page 2").wait_for()
    second = shown()
    assert page.locator("#files [data-pager=files] button", has_text="Older").is_disabled()
    assert len(first) == 20 and len(second) == 3 and first | second == every
    page.locator("#files [data-pager=files] button", has_text="Newer").click()
    page.locator("#files [data-pager=files] span", has_text="page 1").wait_for()
    assert shown() == first


def test_a_running_batch_is_cancelled_from_the_page(page: Any, stack: Stack) -> None:
    # given a cloud alias whose upstream holds each answer 10 s (the fake's "slow10"), and a batch of 4 lines on it:
    # with 2 lines at a time per pool, it runs for 20 s at least (cancelled, it ends when its lines in flight do)
    admin = {"authorization": f"Bearer {ADMIN}"}
    master = {"authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=stack.edge, timeout=30) as client:
        put = client.put("/admin/providers/loopback-slow", headers=admin, json={
            "template": "openai", "api_base": stack.providers.openai_base, "api_key": "sk-fake-slow",
            "published": [{"alias": "dash-slow", "upstream_model": "gpt-slow10"}]})
        assert put.status_code == 200, put.text
        poll(lambda: "dash-slow" in {m["id"] for m in client.get("/v1/models", headers=master).json()["data"]},
             timeout=30)
        jsonl = "".join(json.dumps({"custom_id": f"slow-{i}", "method": "POST", "url": "/v1/chat/completions",
                                    "body": {"model": "dash-slow", "messages": [{"role": "user", "content": "hi"}]}})
                        + "\n" for i in range(4))
        upload = client.post("/v1/files", headers=master, data={"purpose": "batch"},
                             files={"file": ("slow.jsonl", jsonl.encode(), "application/jsonl")})
        created = client.post("/v1/batches", headers=master, json={
            "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        poll(lambda: client.get(f"/v1/batches/{batch_id}", headers=master).json()["status"] == "in_progress",
             timeout=30)
    # when the operator presses its Cancel button (and confirms) while its first lines run
    go(page, stack, "batches")
    page.click("#batches-refresh")
    page.once("dialog", lambda d: d.accept())
    page.click(f"[data-cancel='{batch_id}']")
    # then the batch stops: cancelling while its lines in flight finish, no Cancel button any more
    row = page.locator("#batches tr", has=page.locator(f"[data-batch='{batch_id}']"))
    row.locator("[data-status=cancelling], [data-status=cancelled]").wait_for()
    assert row.locator("[data-cancel]").count() == 0 and page.locator("#batches .error").count() == 0
    # and the page, refreshing itself while the batch is not finished, shows it cancelled once those lines are done
    row.locator("[data-status=cancelled]").wait_for()
    with httpx.Client(base_url=stack.edge, headers=master, timeout=30) as client:
        counts = client.get(f"/v1/batches/{batch_id}").json()["request_counts"]
    assert counts["completed"] < 4 and f"{counts['completed'] + counts['failed']} / 4" in row.text_content()


def test_an_admin_token_only_sign_in_is_told_batches_need_the_master_key(page: Any, stack: Stack) -> None:
    # given a sign-in with the admin token alone
    page.click("#signout")
    sign_in(page, ADMIN, "")
    page.locator("nav a", has_text="Batches").wait_for()
    try:
        # when the operator opens Batches & files, then the page says why there is nothing, without an error
        go(page, stack, "batches")
        page.locator(".needs-master").wait_for()
        assert page.locator(".error").count() == 0 and page.locator("#batches table").count() == 0
    finally:
        page.click("#signout")
        sign_in(page, ADMIN, MASTER)
        page.locator("nav a", has_text="Batches").wait_for()


def test_load_and_unload_with_the_progress_bar(page: Any, stack: Stack) -> None:
    go(page, stack, "clusters")
    cluster = page.locator(".cluster[data-cluster=default]")
    form = cluster.locator(".load-form")
    form.locator("[name=model]").fill(str(stack.tiny_model))
    form.locator("[name=alias]").fill("dash-tiny")
    form.locator("[name=sharding]").select_option("solo")
    form.locator("button[type=submit]").click()
    # the bar follows the load job to 100 %, and the pool appears
    try:
        page.locator(".load-job[data-state=done] [role=progressbar][aria-valuenow='100']").wait_for()
        page.locator("[data-unload=dash-tiny]").wait_for()
    except playwright_api.Error:
        raise AssertionError(cluster.text_content()) from None
    shot(page, "clusters")
    page.once("dialog", lambda d: d.accept())
    page.click("[data-unload=dash-tiny]")
    page.locator("[data-unload=dash-tiny]").wait_for(state="detached")
    assert page.locator(".error").count() == 0


def test_the_overview_fits_a_phone_in_dark_mode(page: Any, stack: Stack) -> None:
    # given a phone-sized viewport with the system in dark mode
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    try:
        go(page, stack, "overview")
        page.locator("#overview tr", has_text=NODE).wait_for()
        # then nothing is wider than the screen (wide tables scroll inside their panel) and the theme is dark
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 20, 24)", background
        shot(page, "phone-dark")
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
        page.emulate_media(color_scheme="light")


@pytest.fixture()
def open_edge(ddb_tables: str) -> Iterator[str]:
    """An edge in open mode (no master key, no admin token) on its own tables."""
    proc, base = start_edge("asgi", env={"ISTHMUS_MASTER_KEY": "", "ISTHMUS_ADMIN_TOKEN": "",
                                         "ODYSSAI_X_ADMIN_TOKEN": ""})
    try:
        yield base
    finally:
        stop(proc)


def test_open_mode_says_so_and_needs_no_token(page: Any, open_edge: str) -> None:
    # given an open-mode gateway, opened from loopback (another origin: nothing signed in there)
    page.goto(f"{open_edge}/dashboard/#/overview")
    # then no sign-in is asked: the badge says open mode and the pages show
    page.locator("#mode", has_text="open mode").wait_for()
    page.locator("#overview .card", has_text="Readiness").wait_for()
    assert page.locator(".signin").count() == 0 and page.locator("nav a").count() >= 8
    # and Batches & files lists (one shared caller in open mode, who sees every batch and file) rather than refusing
    page.goto(f"{open_edge}/dashboard/#/batches")
    page.locator("#batches .panel [data-pager=batches]").wait_for()  # (the session's tables: others may be listed)
    page.locator("#files .panel [data-pager=files]").wait_for()
    assert page.locator(".needs-master, .error").count() == 0
