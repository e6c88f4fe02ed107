"""The web UI in Debian's Chromium, against a real hub with the demo's six sites and their agents.

Every page's requests are recorded: the UI asks nothing of any host but its hub and never puts
the token in a URL. Screenshots go to ``artifacts/ui``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Locator, Page, Position, expect, sync_playwright

from edgefleet.cli.demo import sample_manifests
from edgefleet.localfleet import LocalFleet, free_port
from edgefleet.model import App, Site
from tests.support.browser import (
    CHROMIUM,
    launch,
    report,
    seed_store,
    shot,
    sign_in,
    world_sites,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium: run tools/browser.sh"),
]

_subnet = itertools.count(150)

MANIFEST = """\
apiVersion: edgefleet.io/v1alpha1
kind: App
metadata:
  name: {name}
  tenant: demo
spec:
  workload:
    type: process
    command: edgefleet-hello
    healthPath: /healthz
  resources: {{cpu: 100m, memory: 32Mi}}
  scaling:
    minReplicas: {min_replicas}
    maxReplicas: 10
  placement:
    replicas: 2
    selector: {{regions: [eu-west]}}
"""


def demo_sites() -> list[Site]:
    """The demo's six sites, moved to addresses of their own (a demo may run beside)."""
    sites, _ = sample_manifests()
    n = next(_subnet)
    moved = []
    for k, site in enumerate(sites, start=1):
        data = site.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["spec"]["addresses"]["ip"] = f"127.0.{n}.{k}"
        data["spec"]["networks"] = [f"127.1.{n}.{k * 4}/30"]
        moved.append(Site.model_validate(data))
    return moved


@pytest.fixture(scope="module")
def demo_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    fleet = LocalFleet(
        workdir=tmp_path_factory.mktemp("ui") / "fleet",
        hub_port=free_port(),
        dns_port=free_port(),
        placement_resync=1.0,
    )
    sites = demo_sites()
    with fleet.running():
        fleet.start_hub()
        with fleet.client() as admin:
            for site in sites:
                admin.apply(site)
        fleet.start_agents(sites)
        yield fleet


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, demo_fleet: LocalFleet) -> Iterator[Page]:
    """A fresh page; afterwards, every request it made went to the hub, none with the token."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    asked: list[str] = []
    opened.on("request", lambda request: asked.append(request.url))
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert asked, "the page made no request"
    strangers = [url for url in asked if not url.startswith(demo_fleet.hub_url + "/")]
    assert strangers == []
    assert not [url for url in asked if demo_fleet.admin_token in url]
    assert errors == []


def test_sign_in_refuses_a_bad_token_and_takes_a_good_one(
    page: Page, demo_fleet: LocalFleet
) -> None:
    page.goto(f"{demo_fleet.hub_url}/ui/")
    token = page.get_by_label("API token")
    expect(token).to_have_attribute("type", "password")
    token.fill("efu_0123456789abcdef_" + "A" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown token")
    expect(page.get_by_role("navigation", name="Views")).to_have_count(0)
    shot(page, "sign-in-refused")

    token.fill(demo_fleet.admin_token or "")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Views")).to_be_visible()
    expect(page.locator("header")).to_contain_text("admin")
    # Kept for this tab only: not in localStorage, not in a cookie.
    assert page.evaluate("() => Object.keys(localStorage).length") == 0
    assert page.context.cookies() == []
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_the_map_shows_every_demo_site_and_a_site_opens_with_the_keyboard(
    page: Page, demo_fleet: LocalFleet
) -> None:
    sign_in(page, demo_fleet.hub_url, demo_fleet.admin_token or "")
    names = sorted(demo_fleet.sites)
    world = page.get_by_role("img", name=re.compile(r"^Map of 6 sites"))
    expect(world).to_be_visible()
    expect(world).to_have_attribute("data-drawn", "6")
    assert sorted(world.evaluate("c => c.mapModel.sites().map(s => s.name)")) == names
    # Every agent reports: every site turns Ready on the map, without a reload.
    expect(world).to_have_attribute("aria-label", "Map of 6 sites: 6 ready", timeout=30_000)
    assert {s["phase"] for s in world.evaluate("c => c.mapModel.sites()")} == {"Ready"}
    # Sites sit where they are: Tokyo east of Paris, Paris east of New York.
    dots = {name: dot_of(world, name) for name in ("new-york", "paris", "tokyo")}
    assert dots["new-york"]["x"] < dots["paris"]["x"] < dots["tokyo"]["x"]
    # Regions and zones.
    for region in ("eu-west", "us-east", "ap"):
        expect(page.get_by_role("button", name=re.compile(rf"^{region}\b"))).to_be_visible()
    shot(page, "fleet")

    # Reach Paris in the site list with the keyboard alone, and open it.
    button = page.get_by_role("table", name="Sites").get_by_role("button", name="paris")
    button.focus()
    page.keyboard.press("Enter")
    details = page.get_by_role("region", name="Site paris")
    expect(details).to_be_visible()
    expect(details).to_contain_text("eu-west")
    expect(details.get_by_role("heading", name="Neighbours")).to_be_visible()
    # Its nearest neighbour is London, and the agent's own probes say it is up.
    expect(details).to_contain_text("london")
    expect(details.get_by_role("heading", name="Events")).to_be_visible()
    expect(details).to_contain_text("Created")
    shot(page, "site-paris")

    # The mouse over Tokyo's dot names it; a click on it opens Tokyo.
    tokyo: Position = {"x": dots["tokyo"]["x"], "y": dots["tokyo"]["y"]}
    world.hover(position=tokyo)
    expect(page.get_by_role("tooltip")).to_contain_text("tokyo (ap/")
    world.click(position=tokyo)
    expect(page.get_by_role("region", name="Site tokyo")).to_be_visible()
    assert dot_of(world, "tokyo")["selected"]
    # Away from every dot, a click opens nothing and the name goes.
    world.click(position={"x": 5, "y": 5})
    expect(page.get_by_role("tooltip")).to_be_hidden()
    expect(page.get_by_role("region", name="Site tokyo")).to_be_visible()


def test_deploy_an_app_and_watch_its_replicas_appear(page: Page, demo_fleet: LocalFleet) -> None:
    sign_in(page, demo_fleet.hub_url, demo_fleet.admin_token or "")
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Deploy").click()
    editor = page.get_by_role("textbox", name="Manifest")
    expect(editor).to_be_visible()
    replace_manifest(page, MANIFEST.format(name="web", min_replicas=0))
    page.evaluate("() => { window.notReloaded = true }")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status")).to_contain_text("demo/web created")
    page.get_by_role("link", name=re.compile("web")).first.click()
    expect(page.get_by_role("heading", name="App demo/web")).to_be_visible()
    table = page.get_by_role("table", name="Replicas per site")
    # Placement puts two replicas in eu-west; the agents start them; the page follows the
    # stream without a reload until both are ready.
    expect(table.locator("tbody tr")).to_have_count(2, timeout=30_000)
    ready = table.locator("tbody tr td:nth-child(4)")
    expect(ready).to_have_text(["1", "1"], timeout=60_000)
    assert page.evaluate("() => window.notReloaded") is True
    for heading in ("Demand per region", "DNS answers per region", "Placement changes"):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    # The fleet's DNS sends every region to the replicas in eu-west, asked at a site there.
    answers = page.get_by_role("list", name="DNS answers per region")
    for region in ("eu-west", "us-east", "ap"):
        expect(answers.locator(f'li[data-region="{region}"]')).to_contain_text(
            re.compile(r"\(asked at [a-z-]+\) -> (paris|london)")
        )
    # Placement's decision is in the app's timeline.
    expect(page.get_by_role("main")).to_contain_text("Placed")
    expect(page.locator("#live")).to_have_text("Live")
    shot(page, "app-web")
    with demo_fleet.client() as admin:
        assert admin.get_app("demo", "web").status.ready_replicas == 2


def test_a_bad_manifest_shows_its_error_at_the_field_and_changes_nothing(
    page: Page, demo_fleet: LocalFleet
) -> None:
    sign_in(page, demo_fleet.hub_url, demo_fleet.admin_token or "")
    page.goto(f"{demo_fleet.hub_url}/ui/#/deploy")
    replace_manifest(page, MANIFEST.format(name="broken", min_replicas=-1))
    page.get_by_role("button", name="Apply").click()
    errors = page.get_by_role("list", name="Validation errors")
    expect(errors).to_contain_text("spec.scaling.minReplicas")
    expect(errors).to_contain_text("greater than or equal to 0")
    # Marked in the editor, on the line of minReplicas.
    marked = page.locator(".cm-lintRange-error")
    expect(marked).to_have_count(1)
    expect(marked).to_have_text(re.compile("-1|minReplicas"))
    line = MANIFEST.splitlines().index("    minReplicas: {min_replicas}") + 1
    errors.get_by_role("button", name=f"Go to line {line}").click()
    expect(page.locator(".cm-activeLine")).to_contain_text("minReplicas")
    shot(page, "manifest-error")
    # Broken YAML is caught in the editor before anything is sent.
    replace_manifest(page, "kind: App\nmetadata: {name: [unclosed\n")
    expect(page.locator(".cm-lintRange-error").first).to_be_visible(timeout=10_000)
    with httpx.Client(headers=demo_fleet.headers) as client:
        gone = client.get(f"{demo_fleet.hub_url}/api/v1/tenants/demo/apps/broken")
    assert gone.status_code == 404


def test_change_scaling_bounds_then_delete_with_confirmation(
    page: Page, demo_fleet: LocalFleet
) -> None:
    with demo_fleet.client() as admin:
        admin.apply(
            App.model_validate(yaml.safe_load(MANIFEST.format(name="tune", min_replicas=0)))
        )
    sign_in(page, demo_fleet.hub_url, demo_fleet.admin_token or "")
    page.goto(f"{demo_fleet.hub_url}/ui/#/apps/demo/tune")
    low = page.get_by_label("Minimum replicas")
    high = page.get_by_label("Maximum replicas")
    expect(high).to_have_value("10")
    # Bounds the hub refuses: the error sits at the field.
    low.fill("5")
    high.fill("3")
    page.get_by_role("button", name="Save scaling").click()
    expect(page.get_by_role("alert").or_(page.locator("[aria-invalid=true]")).first).to_be_visible()
    expect(page.get_by_text("minReplicas must not exceed maxReplicas")).to_be_visible()
    # Good bounds are saved through the API.
    low.fill("1")
    high.fill("4")
    page.get_by_role("button", name="Save scaling").click()
    expect(page.get_by_role("status")).to_contain_text(re.compile("saved|configured", re.I))
    with demo_fleet.client() as admin:
        scaling = admin.get_app("demo", "tune").spec.scaling
    assert (scaling.min_replicas, scaling.max_replicas) == (1, 4)

    # Delete: nothing happens until the name is typed; Escape backs out.
    opener = page.get_by_role("button", name="Delete app")
    opener.click()
    dialog = page.get_by_role("dialog")
    confirm = dialog.get_by_role("button", name="Delete", exact=True)
    expect(confirm).to_be_disabled()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()
    opener.click()
    dialog.get_by_label("Type the app name to confirm").fill("tun")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Type the app name to confirm").fill("tune")
    shot(page, "delete-dialog")
    confirm.click()
    expect(page).to_have_url(re.compile(r"#/apps$"))
    with httpx.Client(headers=demo_fleet.headers) as client:
        gone = client.get(f"{demo_fleet.hub_url}/api/v1/tenants/demo/apps/tune")
    assert gone.status_code == 404


def test_every_control_has_a_name_and_the_keyboard_reaches_the_views(
    page: Page, demo_fleet: LocalFleet
) -> None:
    sign_in(page, demo_fleet.hub_url, demo_fleet.admin_token or "")
    for view in ("#/fleet", "#/apps", "#/deploy"):
        page.goto(f"{demo_fleet.hub_url}/ui/{view}")
        page.wait_for_timeout(300)
        unnamed = page.evaluate(UNNAMED_CONTROLS)
        assert unnamed == [], (view, unnamed)
    # From the top of the page, Tab goes to the skip link first, then reaches every view's link.
    page.goto(f"{demo_fleet.hub_url}/ui/#/fleet")
    page.locator("body").focus()
    seen = []
    for _ in range(12):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("() => document.activeElement.textContent.trim()"))
    assert seen[0] == "Skip to content"
    assert {"Fleet", "Apps", "Deploy"} <= set(seen)
    # Enter on a view's link opens it.
    apps = page.get_by_role("navigation", name="Views").get_by_role("link", name="Apps")
    apps.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("table", name="Apps")).to_be_visible()
    expect(apps).to_have_attribute("aria-current", "page")


def test_two_thousand_sites_all_reach_the_map(browser: Browser, tmp_path: Path) -> None:
    fleet = LocalFleet(workdir=tmp_path / "fleet", hub_port=free_port(), dns_port=free_port())
    sites = world_sites(2000)
    seed_store(fleet, sites, ready=1500)
    with fleet.running():
        fleet.start_hub()
        report(fleet, sites, demand=200)
        # A HiDPI screen: the canvas has a device pixel per device pixel, not a blurred CSS one.
        context = browser.new_context(
            viewport={"width": 1400, "height": 900}, device_scale_factor=2
        )
        page = context.new_page()
        sign_in(page, fleet.hub_url, fleet.admin_token or "")
        world = page.get_by_role("img", name=re.compile(r"^Map of 2000 sites"))
        expect(world).to_have_attribute("data-drawn", "2000", timeout=30_000)
        expect(page.get_by_text(re.compile(r"showing 200 of 2000"))).to_be_visible()
        size = world.evaluate("c => [c.width, c.height, c.getBoundingClientRect().width]")
        assert size[0] == round(size[2] * 2) and size[1] > 0
        # Sized by load: every site with demand is drawn larger than every one without.
        page.wait_for_function(
            "() => document.querySelector('canvas.sites').mapModel.sites()"
            ".filter(s => s.load > 0).length === 200"
        )
        dots = world.evaluate("c => c.mapModel.sites()")
        loaded = [d["r"] for d in dots if d["load"] > 0]
        idle = [d["r"] for d in dots if d["load"] == 0]
        assert len(loaded) == 200 and len(idle) == 1800
        assert min(loaded) > max(idle)
        # A click opens the site drawn on top where it lands, as the page's hit-test says.
        dot = dot_of(world, "s0100")
        on_top = world.evaluate("(c, d) => c.mapModel.at(d.x, d.y)", dot)
        world.click(position={"x": dot["x"], "y": dot["y"]})
        expect(page.get_by_role("region", name=f"Site {on_top}")).to_be_visible()
        # Redrawn only around what changed, the map is what drawing it whole makes of it.
        assert_redrawn_around_changes_as_whole(page, world)
        # A region dims the others on the map.
        page.get_by_role("button", name="eu-west", exact=True).click()
        expect(world).to_have_attribute("aria-label", re.compile(r"; 222 highlighted$"))
        regions = {s.metadata.name: s.spec.region for s in sites}
        wrong = [
            d["name"]
            for d in world.evaluate("c => c.mapModel.sites()")
            if d["dimmed"] == (regions[d["name"]] == "eu-west") and not d["selected"]
        ]
        assert wrong == []  # (the selected site is never dimmed)
        # The page measured itself (bench/ui_render.py reports the figures).
        metrics = page.evaluate("() => window.edgefleetMetrics")
        assert any(m["view"] == "fleet" and m["sites"] == 2000 for m in metrics), metrics
        shot(page, "fleet-2000")
        context.close()


def assert_redrawn_around_changes_as_whole(page: Page, world: Locator) -> None:
    """Select two sites in turn (each redraws only around the dots it changes), then check the
    canvas's pixels against a whole redraw of the same data (the canvas resized and back)."""
    viewport = page.viewport_size
    assert viewport is not None
    for attempt in range(5):
        for name in ("s0150", "s0151"):
            page.get_by_role("table", name="Sites").get_by_role("button", name=name).click()
            expect(page.get_by_role("region", name=f"Site {name}")).to_be_visible()
        renders = len(page.evaluate("() => window.edgefleetMetrics"))
        if world.evaluate("c => c.mapModel.lastPaint") != "dirty":
            continue  # the stream's news came in between: try again
        around_changes = world.evaluate("c => c.toDataURL()")
        width = world.evaluate("c => c.width")
        page.set_viewport_size({"width": viewport["width"] - 100, "height": viewport["height"]})
        page.wait_for_function("w => document.querySelector('canvas.sites').width !== w", arg=width)
        page.set_viewport_size(viewport)
        page.wait_for_function("w => document.querySelector('canvas.sites').width === w", arg=width)
        whole = world.evaluate("c => c.toDataURL()")
        if len(page.evaluate("() => window.edgefleetMetrics")) == renders:
            assert around_changes == whole, f"attempt {attempt}"
            return
    pytest.fail("the map never held still long enough to compare")


def dot_of(world: Locator, name: str) -> dict[str, Any]:
    """Where the map drew site ``name`` (CSS px from the canvas's corner), its size and state."""
    dot: dict[str, Any] | None = world.evaluate("(c, name) => c.mapModel.site(name)", name)
    assert dot is not None, f"{name} is not on the map"
    return dot


def replace_manifest(page: Page, text: str) -> None:
    """Put ``text`` in the manifest editor in place of what it holds."""
    editor = page.get_by_role("textbox", name="Manifest")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    editor.fill(text)


UNNAMED_CONTROLS = """() => {
  const controls = document.querySelectorAll(
    'button, input, select, textarea, a[href], [role=textbox], [role=button], [tabindex]');
  const named = (el) => {
    if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return true;
    if (el.labels && el.labels.length) return true;
    if (el.type === 'hidden' || el.getAttribute('tabindex') === '-1') return true;
    if (el.closest('[aria-hidden=true]')) return true;
    return (el.textContent || el.getAttribute('title') || '').trim().length > 0;
  };
  return [...controls].filter(el => el.offsetParent !== null && !named(el))
    .map(el => el.outerHTML.slice(0, 120));
}"""
